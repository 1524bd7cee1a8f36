"""`alloop simulate` through the CLI on SYNTHETIC data, into a real SQLite MLflow store.

Random backbone weights and 32 px images keep it fast; what is checked is the plumbing: the curves,
summary and plot logged as artifacts, the metrics per strategy and mode, the printed summary, the
feature cache (written once, reused by the next run) and the errors for bad input.
"""

import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from mlproject.cli import app
from mlproject.data.loaders import load_dataset

STRATEGIES = ("random", "margin", "cluster")
SMALL = ["--weights", "none", "--image-size", "32", "--seeds", "0,1,2", "--budget", "6", "--initial-labels", "6",
         "--max-human", "24", "--pca-dims", "8", "--tau", "0.9", "--no-progress"]


def run_cli(*args):
    result = CliRunner().invoke(app, ["simulate", *map(str, args)])
    return result


def only_run(experiment: str):
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} was not created"
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    return client, runs


def test_simulate_logs_curves_summary_plot_and_metrics_and_reuses_the_feature_cache(
        tracking_uri, synthetic_data, tmp_path, monkeypatch):
    state = tmp_path / "state"
    monkeypatch.setenv("ALLOOP_STATE_DIR", str(state))  # the default cache lives under it
    first = run_cli("--data", synthetic_data, *SMALL, "--strategies", ",".join(STRATEGIES),
                    "--experiment", "sim-test", "--out", tmp_path / "out")
    assert first.exit_code == 0, first.output
    assert "Backbone features: computed and cached" in first.output
    cache_files = list((state / "features").glob("features-*.npz"))
    assert len(cache_files) == 1, cache_files
    stamp = cache_files[0].stat().st_mtime_ns

    # The printed summary: one row per strategy and mode, and where to look.
    assert "labels to target" in first.output and "auto precision" in first.output
    table = first.output[first.output.index("labels to target"):]
    for strategy in STRATEGIES:
        assert sum(line.split()[:2] in ([strategy, "with"], [strategy, "without"])
                   for line in table.splitlines() if line.strip()) == 2, strategy
    assert "Full-label accuracy" in first.output
    assert f"mlflow ui --backend-store-uri {tracking_uri}" in first.output

    client, runs = only_run("sim-test")
    assert len(runs) == 1
    run = runs[0]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "simulation")}
    assert {"simulation/curves.csv", "simulation/summary.csv", "simulation/learning_curves.png"} <= artifacts
    curves = pd.read_csv(client.download_artifacts(run.info.run_id, "simulation/curves.csv", str(tmp_path / "dl")))
    assert set(curves["strategy"]) == set(STRATEGIES)
    assert set(curves["auto_labels"]) == {True, False} and set(curves["seed"]) == {0, 1, 2}
    assert curves["n_human"].max() <= 24 and curves["balanced_accuracy"].between(0, 1).all()
    png = Path(client.download_artifacts(run.info.run_id, "simulation/learning_curves.png", str(tmp_path / "dl")))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    summary = pd.read_csv(client.download_artifacts(run.info.run_id, "simulation/summary.csv", str(tmp_path / "dl")))
    assert len(summary) == 2 * len(STRATEGIES)
    assert (tmp_path / "out" / "learning_curves.png").is_file()  # --out keeps a copy

    metrics = run.data.metrics
    assert 0.0 <= metrics["full_label_accuracy"] <= 1.0
    assert metrics["target_accuracy"] == pytest.approx(0.99 * metrics["full_label_accuracy"])
    for row in summary.itertuples():
        mode = "with_auto" if row.auto_labels else "without_auto"
        assert metrics[f"seeds_reaching_target.{row.strategy}.{mode}"] == row.seeds_reaching_target
        assert metrics[f"auto_labels_made.{row.strategy}.{mode}"] == row.auto_labels_made
        for name in ("labels_to_target", "share_of_pool", "ratio_to_random", "auto_label_precision"):
            value = getattr(row, name)
            key = f"{name}.{row.strategy}.{mode}"
            assert (key in metrics) == (not pd.isna(value)), key
            if key in metrics:
                assert metrics[key] == pytest.approx(value)
        if not row.auto_labels:
            assert row.auto_labels_made == 0
    history = client.get_metric_history(run.info.run_id, "curve.margin.without_auto")
    assert len(history) >= 2 and all(0 <= m.value <= 1 for m in history)
    params = run.data.params
    assert params["weights"] == "none" and params["features_from_cache"] == "False"
    assert params["seeds"] == "0,1,2" and params["pca_dims"] == "8" and params["policy_tau"] == "0.9"

    # Second run, other strategies: the features come from the cache, the file is not rewritten.
    second = run_cli("--data", synthetic_data, *SMALL, "--strategies", "random,entropy", "--auto-labels", "off",
                     "--experiment", "sim-test")
    assert second.exit_code == 0, second.output
    assert "Backbone features: reused" in second.output
    assert cache_files[0].stat().st_mtime_ns == stamp
    assert list((state / "features").glob("features-*.npz")) == cache_files
    _, runs = only_run("sim-test")
    assert len(runs) == 2
    assert runs[1].data.params["features_from_cache"] == "True"
    assert runs[1].data.params["feature_cache_key"] == params["feature_cache_key"]


def folders_dataset(synthetic_data: Path, root: Path) -> Path:
    """The synthetic images in the one-folder-per-label layout."""
    for record in load_dataset(synthetic_data):
        target = root / record.label
        target.mkdir(parents=True, exist_ok=True)
        source = Path(record.path)
        shutil.copy(source, target / f"{source.parent.name}-{source.name}")  # Train/ and Test/ reuse names
    return root


def test_a_bad_image_stops_the_run_by_name_or_is_skipped_and_counted(tracking_uri, synthetic_data, tmp_path):
    data = folders_dataset(synthetic_data, tmp_path / "folders")
    (data / "ok" / "broken.png").write_bytes(b"not a png at all")
    args = ["--data", data, "--layout", "folders", *SMALL, "--strategies", "random", "--auto-labels", "off",
            "--max-human", "12", "--cache-dir", tmp_path / "cache", "--experiment", "sim-bad"]
    stopped = run_cli(*args)
    assert stopped.exit_code == 1
    assert "broken.png" in stopped.output and "--skip-bad-images" in stopped.output
    assert mlflow.MlflowClient().get_experiment_by_name("sim-bad") is None  # stopped before any run

    skipped = run_cli(*args, "--skip-bad-images")
    assert skipped.exit_code == 0, skipped.output
    assert "Skipped 1 unreadable image" in skipped.output and "broken.png" in skipped.output
    client, runs = only_run("sim-bad")
    run = runs[0]
    assert run.data.metrics["bad_images"] == 1
    bad = client.download_artifacts(run.info.run_id, "data/bad_images.csv", str(tmp_path / "dl"))
    assert "broken.png" in Path(bad).read_text()
    assert int(run.data.params["n_images"]) == len(load_dataset(synthetic_data))  # all but the broken one


@pytest.mark.parametrize("args, expected", [
    (["--strategies", "random,smart"], "--strategies: unknown smart"),
    (["--seeds", "0,one"], "--seeds must be comma-separated whole numbers"),
    (["--auto-labels", "sometimes"], "--auto-labels must be one of both, on, off"),
    (["--pooling", "median"], "--pooling must be one of"),
    (["--tau", "1.5"], "--tau must be between 0 and 1"),
    (["--class-tau", "scratch=0.9"], "--class-tau takes CLASS=VALUE pairs with CLASS one of ok, defect"),
    (["--data", "/nonexistent/dataset"], "/nonexistent/dataset"),
])
def test_bad_input_is_refused_with_what_to_do(tracking_uri, synthetic_data, tmp_path, args, expected):
    defaults = ["--data", str(synthetic_data), "--weights", "none", "--image-size", "32", "--cache-dir",
                str(tmp_path / "cache")]
    result = run_cli(*defaults, *args)
    assert result.exit_code == 1, result.output
    assert expected in result.output
    assert not (tmp_path / "cache").exists()  # refused before any feature pass
