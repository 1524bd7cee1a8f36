"""`alloop simulate` refuses bad option values by the option's name, before it reads any data."""

import pytest
from typer.testing import CliRunner

from mlproject.cli import app


@pytest.mark.parametrize("args, expected", [
    (["--budget", "0"], "--budget must be >= 1 human label per round, got 0"),
    (["--initial-labels", "1"], "--initial-labels must be >= 2"),
    (["--max-human", "-3"], "--max-human must be >= 0"),
    (["--test-fraction", "1.5"], "--test-fraction must be between 0 and 1 (exclusive), got 1.5"),
    (["--pca-dims", "-1"], "--pca-dims must be >= 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--image-size", "8"], "--image-size must be a whole number of at least 32 pixels"),
    (["--pooling", "median"], "--pooling must be one of avg, max, avgmax, stats, got 'median'"),
    (["--strategies", "random,smart"], "--strategies: unknown smart; choose from"),
    (["--strategies", "random,random"], "--strategies lists a name twice"),
    (["--feature-layers", " , "], "--feature-layers is empty"),
    (["--clusters", "-2"], "--clusters must be >= 0"),
    (["--max-auto-per-class", "ok=-1"], "--max-auto-per-class ok must be >= 0"),
])
def test_a_bad_value_is_refused_naming_the_option(args, expected, tmp_path):
    data = tmp_path / "never-read"  # refused before the data is looked at
    result = CliRunner().invoke(app, ["simulate", "--data", str(data), *args])
    assert result.exit_code == 1, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
