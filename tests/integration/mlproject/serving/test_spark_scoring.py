"""``score`` on a real local Spark (one session for the module) with a tiny real registered model in a
real SQLite registry: the same scores as local predict, bad files as rows, the entry point and CLI."""

import shlex
import shutil
import subprocess

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from mlproject.data.loaders import IMAGE_SUFFIXES
from mlproject.serving.spark_scoring import OUTPUT_COLUMNS, ScoreSettings, score_archive, spark_session
from tests.support.models import REPO, project_env, register_tiny

pytestmark = pytest.mark.integration

NAME = "spark-tiny"
CHAMPION = f"models:/{NAME}@champion"


@pytest.fixture(scope="module")
def registry(tmp_path_factory, synthetic_data):
    """One tiny champion for the module (training it per test would dominate the run time)."""
    store = tmp_path_factory.mktemp("score-registry")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        patch.chdir(store)  # a new experiment's artifacts go to ./mlruns: here, not into the checkout
        mlflow.set_tracking_uri(uri)
        yield register_tiny(store, synthetic_data, NAME)
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def spark(registry):
    session = spark_session("local[2]", batch_size=8, progress=False)
    yield session
    session.stop()


def local_predict(paths):
    model = mlflow.pyfunc.load_model(CHAMPION)
    return model.predict(pd.DataFrame({"image": [open(p, "rb").read() for p in paths], "source": list(paths)}))


#: Spark scores in batches of 8, local predict in one: float32 VGG16 outputs then differ by up to ~1e-5
#: on CPUs whose oneDNN kernels depend on the batch size (5.5e-6 measured on an AVX2-only EPYC; 0.0 with
#: AVX-512). A wrong model or preprocessing moves scores by 1e-3 or more.
BATCHING_ATOL = 5e-5

def test_spark_scores_every_image_as_local_predict_does(spark, synthetic_data, tmp_path):
    said = []
    done = score_archive(ScoreSettings(images=synthetic_data, output=tmp_path / "out", model_uri=CHAMPION,
                                       batch_size=8), spark=spark, say=said.append)
    images = sorted(str(p) for p in synthetic_data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    table = pd.read_parquet(done.parquet).sort_values("path", ignore_index=True)
    assert table["path"].tolist() == images  # every image once, masks under Label/ included (recursive)
    expected = local_predict(table["path"])
    np.testing.assert_allclose(table["p_defect"], expected["p_defect"], rtol=0, atol=BATCHING_ATOL)
    assert table["label"].tolist() == expected["label"].tolist()
    assert set(table["model_version"]) == {f"{NAME}/1"}  # the alias was pinned to a version
    assert (table["error"] == "").all()

    written = pd.read_csv(done.csv, keep_default_na=False)
    assert tuple(written.columns) == OUTPUT_COLUMNS
    assert written["path"].tolist() == images  # one file, sorted by path
    np.testing.assert_allclose(written["p_defect"].astype(float), table["p_defect"], rtol=0, atol=1e-9)
    assert done.n_images == len(images) and done.unreadable == done.undecodable == 0
    assert done.label_counts == expected["label"].value_counts().to_dict()
    others = [p for p in synthetic_data.rglob("*") if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES]
    assert others and done.skipped_files == len(others)  # Labels.txt: counted, not scored
    assert not (tmp_path / "out" / "_scratch").exists()
    assert f"scoring {len(images)} images" in said[0] and f"{NAME}/1" in said[0]


def bad_archive(folder, synthetic_data):
    """Three good images, a truncated PNG, a text file named .png and a path that does not exist."""
    folder.mkdir()
    good = sorted(p for p in synthetic_data.rglob("*.PNG") if p.parent.name != "Label")[:3]
    for path in good:
        shutil.copy(path, folder / path.name)
    (folder / "truncated.png").write_bytes(good[0].read_bytes()[:100])
    (folder / "text.png").write_text("not an image")
    return [str(folder / p.name) for p in good], {
        "truncated": str(folder / "truncated.png"), "text": str(folder / "text.png"),
        "missing": str(folder / "missing.png")}


def test_bad_files_become_rows_naming_them_and_the_good_ones_are_scored(spark, synthetic_data, tmp_path):
    good, bad = bad_archive(tmp_path / "archive", synthetic_data)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image,label\n" + "".join(f"{p},ok\n" for p in [*good, *bad.values()]))
    done = score_archive(ScoreSettings(images=manifest, output=tmp_path / "out", model_uri=f"models:/{NAME}/1",
                                       batch_size=2), spark=spark, say=lambda line: None)
    table = pd.read_parquet(done.parquet).set_index("path")
    assert sorted(table.index) == sorted([*good, *bad.values()])
    for kind, path in bad.items():
        row = table.loc[path]
        assert path in row["error"], kind
        assert np.isnan(row["p_defect"]) and row["label"] == "", kind
    assert table.loc[bad["missing"], "error"].startswith("cannot read file") and "No such file" in \
        table.loc[bad["missing"], "error"]
    assert "cannot decode image" in table.loc[bad["truncated"], "error"]
    scored = table.loc[good]
    assert (scored["error"] == "").all() and scored["p_defect"].between(0, 1).all()
    np.testing.assert_allclose(scored["p_defect"], local_predict(good)["p_defect"], rtol=0, atol=BATCHING_ATOL)
    assert (done.n_images, done.unreadable, done.undecodable, done.scored) == (6, 1, 2, 3)


def test_a_parquet_input_of_paths_and_file_uris(spark, synthetic_data, tmp_path):
    good, bad = bad_archive(tmp_path / "archive", synthetic_data)
    paths = [good[0], f"file://{good[1]}", bad["missing"], None]
    pd.DataFrame({"id": range(4), "path": paths}).to_parquet(tmp_path / "input.parquet")
    done = score_archive(ScoreSettings(images=tmp_path / "input.parquet", output=tmp_path / "out",
                                       model_uri=CHAMPION), spark=spark, say=lambda line: None)
    table = pd.read_parquet(done.parquet).set_index("path")
    assert sorted(table.index) == sorted(paths[:3])  # a null path is no image
    np.testing.assert_allclose(table.loc[paths[:2], "p_defect"], local_predict(good[:2])["p_defect"], rtol=0, atol=BATCHING_ATOL)
    assert (table.loc[paths[:2], "error"] == "").all() and "No such file" in table.loc[bad["missing"], "error"]
    assert (done.n_images, done.unreadable) == (3, 1)


def test_the_cli_scores_with_the_champion_and_names_a_missing_one(spark, synthetic_data, tmp_path):
    from mlproject.cli import app

    good, _ = bad_archive(tmp_path / "archive", synthetic_data)
    result = CliRunner().invoke(app, ["score", "--images", str(tmp_path / "archive"), "--model-name", NAME,
                                      "--output", str(tmp_path / "out"), "--batch-size", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"scored 5 images with {NAME}/1" in result.output and "undecodable images 2" in result.output
    assert pd.read_csv(tmp_path / "out" / "scores.csv")["path"].tolist() == sorted(
        [*good, str(tmp_path / "archive" / "text.png"), str(tmp_path / "archive" / "truncated.png")])

    result = CliRunner().invoke(app, ["score", "--images", str(tmp_path / "archive"), "--model-name", "nobody",
                                      "--output", str(tmp_path / "none")])
    assert result.exit_code == 1 and not (tmp_path / "none").exists()
    assert "'nobody' has no champion" in result.output and "promote" in result.output


def test_mlproject_declares_every_option_of_score_with_its_default():
    from mlflow.projects import _project_spec

    from mlproject.entrypoints.score import build_parser

    entry = _project_spec.load_project(str(REPO)).get_entry_point("score")
    command = shlex.split(entry.compute_command({"images": "/data"}, storage_dir=None))
    assert command[:3] == ["python", "-m", "mlproject.entrypoints.score"]
    parser = build_parser()
    options = {o for action in parser._actions for o in action.option_strings} - {"-h", "--help"}
    assert options == {token for token in command if token.startswith("--")}
    assert vars(parser.parse_args(command[3:])) == vars(parser.parse_args(["--images", "/data"]))


def test_the_entry_point_logs_the_summary_and_the_csv_to_a_run(registry, synthetic_data, tmp_path):
    good, _ = bad_archive(tmp_path / "archive", synthetic_data)
    output = tmp_path / "scores"
    command = ["mlflow", "run", str(REPO), "-e", "score", "--env-manager", "local", "--experiment-name", "tests",
               "-P", f"images={tmp_path / 'archive'}", "-P", f"model_uri={CHAMPION}", "-P", "master=local[1]",
               "-P", "batch_size=4", "-P", f"output={output}"]
    result = subprocess.run(command, env=project_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert f"CSV: {output / 'scores.csv'}" in result.stdout

    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("tests").experiment_id])[0]
    assert run.data.tags["task"] == "score" and run.data.tags["scored_model_version"] == f"{NAME}/1"
    assert run.data.params["spark_master"] == "local[1]" and run.data.params["model_uri"] == CHAMPION
    assert run.data.params["scored_model_version"] == f"{NAME}/1"
    assert run.data.params["batch_size"] == "4"
    assert run.data.metrics["n_images"] == 5 and run.data.metrics["scored_images"] == 3
    assert run.data.metrics["undecodable_images"] == 2 and run.data.metrics["unreadable_files"] == 0
    assert run.data.metrics["images_per_s"] > 0
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "scores")}
    assert logged == {"scores/scores.csv", "scores/summary.json"}
    rows = pd.read_csv(client.download_artifacts(run.info.run_id, "scores/scores.csv"))
    assert sorted(rows["path"]) == sorted(pd.read_csv(output / "scores.csv")["path"]) and len(rows) == 5
