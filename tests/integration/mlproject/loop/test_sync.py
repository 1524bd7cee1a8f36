"""`alloop sync` rounds against a real Label Studio, a real MLflow store and tiny real models.

The "annotator" here is this test writing annotations through Label Studio's API as the admin user,
with the synthetic data's true labels: a simulated person, nothing mocked.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlproject.cli import app
from tests.support.projects import (
    LOOSE,
    annotate,
    bot_id,
    file_name,
    human_snapshot,
    latest_round,
    ls_client,
    make_project,
    project_id,
    queue,
    read,
    round_plan,
    sync,
)

pytestmark = pytest.mark.integration

# --- tests ---------------------------------------------------------------------------------------------


def test_two_rounds_give_the_expected_counts_and_a_rerun_adds_nothing(labelstudio, tiny_champion, synthetic_data,
                                                                       tmp_path):
    from integrations import mlflow_rounds
    from mlproject.loop.labels import RANK_KEY
    from mlproject.loop.project import project_key

    champion = tiny_champion()
    title, truth = make_project(labelstudio, synthetic_data, 30, "two-rounds")
    ls = ls_client(labelstudio)
    pid, bot = project_id(ls, title), bot_id(ls)
    key = project_key(labelstudio.url, pid)

    first = sync(title, *LOOSE, "--budget", "6", state=tmp_path / "state")
    assert first.exit_code == 0, first.output
    tasks = read(ls, labelstudio, title)
    assert all(t.prediction_of(str(champion)) is not None for t in tasks)  # every task predicted
    assert ls.projects.get(id=pid).model_version == str(champion)
    run = latest_round(key)
    plan = round_plan(run.info.run_id)
    machine = {t.id: a for t in tasks for a in t.annotations if a.completed_by == bot}
    assert 0 < len(machine) == len(plan["auto_labels"]) == int(run.data.metrics["auto_labelled"])
    assert set(machine) == {a["task_id"] for a in plan["auto_labels"]}
    for task_id, annotation in machine.items():  # linked to the prediction it copies
        task = next(t for t in tasks if t.id == task_id)
        assert annotation.parent_prediction == task.prediction_of(str(champion)).id
        assert annotation.choices == task.prediction_of(str(champion)).choices
    shown = queue(ls, title)
    assert [t.id for t in shown] == [r["task_id"] for r in plan["review"]]  # most useful first
    assert [t.data[RANK_KEY] for t in shown] == list(range(1, len(shown) + 1))
    assert len(shown) == min(6, len(tasks) - len(machine)) == int(run.data.metrics["routed"])
    assert run.data.metrics["predicted"] == 30 and mlflow_rounds.state_of(run) == "complete"
    assert {"plan.json", "auto_labels.csv", "review_queue.csv", "clusters.png", "round.json"} <= \
        {f.path for f in __import__("mlflow").MlflowClient().list_artifacts(run.info.run_id)}

    # the annotator answers the queue: labels all but one, skips that one
    for index, task in enumerate(shown):
        annotate(ls, task.id, None if index == 0 else truth[file_name(task)])
    before = human_snapshot(read(ls, labelstudio, title), bot)
    assert len(before) == len(shown)

    second = sync(title, *LOOSE, "--budget", "6", state=tmp_path / "state")
    assert second.exit_code == 0, second.output
    assert "Round 2" in second.output
    tasks = read(ls, labelstudio, title)
    assert human_snapshot(tasks, bot) == before  # human annotations untouched
    run2 = latest_round(key)
    assert mlflow_rounds.round_number(run2) == 2
    assert run2.data.metrics["predicted"] == 0 and run2.data.metrics["human_labels"] == len(shown) - 1
    for task in tasks:  # nobody's task got a machine label on top, no task got two
        machine_here = [a for a in task.annotations if a.completed_by == bot]
        assert len(machine_here) <= 1
        if any(a.completed_by != bot for a in task.annotations):
            assert not machine_here
    machine_after = sum(a.completed_by == bot for t in tasks for a in t.annotations)
    assert machine_after == len(machine) + int(run2.data.metrics["auto_labelled"])

    again = sync(title, *LOOSE, "--budget", "6", state=tmp_path / "state")
    assert again.exit_code == 0 and "nothing changed since round 2" in again.output, again.output
    tasks_again = read(ls, labelstudio, title)
    assert sum(a.completed_by == bot for t in tasks_again for a in t.annotations) == machine_after
    assert sum(len(t.predictions) for t in tasks_again) == sum(len(t.predictions) for t in tasks)
    assert len(mlflow_rounds.round_runs(key)) == 2


@pytest.mark.parametrize("crash_at", ["auto_label", "planned", "applied"])
def test_a_round_killed_midway_then_rerun_ends_like_an_uninterrupted_one(crash_at, labelstudio, tiny_champion,
                                                                         synthetic_data, tmp_path):
    from integrations.labelstudio.project import connection_from_env
    from mlproject.loop.policy import PolicyConfig
    from mlproject.loop.labels import RANK_KEY
    from mlproject.loop.options import SyncOptions
    from mlproject.loop.project import open_project
    from mlproject.loop.sync import run_round

    import keras

    keras.utils.set_random_seed(0)  # random weights: unseeded, a tiny champion may be confident on < 2 tasks
    tiny_champion()
    ls = ls_client(labelstudio)
    options = SyncOptions(model_name="alloop-defect-classifier", state_dir=tmp_path / "state", progress=False,
                          policy=PolicyConfig(tau=0.7, cluster_confidence=0.7, cluster_agreement=0.7, n_clusters=3,
                                              human_budget=5))
    connection = connection_from_env()
    clean_title, _ = make_project(labelstudio, synthetic_data, 24, "clean")
    crash_title, _ = make_project(labelstudio, synthetic_data, 24, "crash")
    uninterrupted = run_round(open_project(connection, clean_title), options)
    assert uninterrupted.counts["auto_labelled"] >= 2, "the kill after the 2nd auto-label needs 2 auto-labels"

    class Killed(Exception):
        pass

    def kill(step, info):
        if step == crash_at and (step != "auto_label" or info["made"] == 2):
            raise Killed(step)

    with pytest.raises(Killed):
        run_round(open_project(connection, crash_title), options, hook=kill)
    report = run_round(open_project(connection, crash_title), options)
    assert report.resumed and report.round == 1

    def end_state(title):
        tasks = read(ls, labelstudio, title)
        labels = {file_name(t): [a.choices for a in t.annotations] for t in tasks}
        ranks = {file_name(t): t.data.get(RANK_KEY) for t in tasks}
        return labels, ranks

    clean, crashed = end_state(clean_title), end_state(crash_title)
    assert any(clean[0].values())  # the round did label something
    assert crashed == clean


def test_retraining_is_gated_by_promotion_on_held_out_human_labels(labelstudio, tiny_champion, synthetic_data,
                                                                   tmp_path):
    from integrations import mlflow_registry
    from mlproject.data.loaders import load_dataset
    from mlproject.loop.project import project_key

    from mlproject.data.synthetic import generate_synthetic_dagm

    # a useless champion: threshold 1.0 calls every image "ok" (balanced accuracy 0.5), trained on
    # `synthetic_data`, whose records its run logs
    tiny_champion(threshold=1.0, log_data=True)
    # 120 images, 24 defective: whichever half the hash holds out (it depends on the server's random
    # port), both halves keep enough defects to train on and to judge with
    pool = generate_synthetic_dagm(tmp_path / "pool", n_images=120, size=64, seed=2)
    title, truth = make_project(labelstudio, pool, 120, "retrain")
    ls = ls_client(labelstudio)
    pid, bot = project_id(ls, title), bot_id(ls)
    for task in read(ls, labelstudio, title):  # people have labelled everything
        annotate(ls, task.id, truth[file_name(task)])
    before = human_snapshot(read(ls, labelstudio, title), bot)
    # random-weight VGG16 statistics of blocks 3-4 tell the synthetic defects apart (a tiny model that learns)
    svm = ["--entry-point", "svm", "--train-param", "weights=none", "--train-param", "image_size=64",
           "--train-param", "pooling=stats", "--train-param", "feature_layers=block3_pool,block4_pool",
           "--train-param", "kernel=linear", "--holdout-share", "0.5", "--retrain"]

    # a training run that fails: the round stops with the reason and how to go on, nothing registered
    broken = sync(title, *[p if p != "kernel=linear" else "kernel=cubic" for p in svm], state=tmp_path / "state")
    assert broken.exit_code == 1 and isinstance(broken.exception, SystemExit), broken.output
    assert "mlflow run . -e svm` failed" in broken.output and "run `alloop sync` again" in broken.output
    assert len(mlflow_registry.all_versions("alloop-defect-classifier")) == 1

    worse = sync(title, *svm, "--train-param", "threshold=1.0", state=tmp_path / "state")
    assert worse.exit_code == 0, worse.output
    assert "rejected" in worse.output and re.search(r"retrained\s+1\n", worse.output)
    assert str(mlflow_registry.require("alloop-defect-classifier", "champion")) == "alloop-defect-classifier/1"
    assert str(mlflow_registry.require("alloop-defect-classifier", "challenger")) == "alloop-defect-classifier/2"

    # the better one: killed right after training, before it is judged; the next sync judges that
    # same version (no second training) and promotes it
    from integrations.labelstudio.project import connection_from_env
    from mlproject.loop.options import SyncOptions
    from mlproject.loop.project import open_project
    from mlproject.loop.sync import run_round

    def kill_after_training(step, info):
        if step == "trained":
            raise KeyboardInterrupt("killed after training")

    options = SyncOptions(model_name="alloop-defect-classifier", state_dir=tmp_path / "state", progress=False,
                          force_retrain=True, holdout_share=0.5, entry_point="svm",
                          train_params={"weights": "none", "image_size": "64", "pooling": "stats",
                                        "feature_layers": "block3_pool,block4_pool", "kernel": "linear"})
    with pytest.raises(KeyboardInterrupt):
        run_round(open_project(connection_from_env(), title), options, hook=kill_after_training)
    assert str(mlflow_registry.require("alloop-defect-classifier", "challenger")) == "alloop-defect-classifier/3"
    better = sync(title, "--holdout-share", "0.5", state=tmp_path / "state")
    assert better.exit_code == 0, better.output
    assert "Round 2 (resumed)" in better.output and "trained by this round before it stopped" in better.output
    assert re.search(r"promoted\s+1\n", better.output), better.output
    champion = mlflow_registry.require("alloop-defect-classifier", "champion")
    assert str(champion) == "alloop-defect-classifier/3"
    assert len(mlflow_registry.all_versions("alloop-defect-classifier")) == 3  # trained once
    tags = mlflow_registry.version_tags(champion)
    # trained on the non-held-out human labels only, with provenance
    assert 0 < int(tags["labels_by_source.human"]) < 120 and tags["round"] == "2"
    tasks = read(ls, labelstudio, title)
    assert all(t.prediction_of(str(champion)) is not None for t in tasks)
    assert ls.projects.get(id=pid).model_version == str(champion)
    assert human_snapshot(tasks, bot) == before
    manifests = Path(tmp_path / "state" / "rounds" / project_key(labelstudio.url, pid) / "round-2")
    train = (manifests / "train.csv").read_text().splitlines()
    holdout = (manifests / "holdout.csv").read_text().splitlines()
    assert train[0] == holdout[0] == "image,label,source,round"
    project_rows = [row for row in train[1:] if not row.endswith(",import,0")]
    assert not set(train[1:]) & set(holdout[1:]) and len(project_rows) + len(holdout) - 1 == 120
    # the champion's own training data joins the training manifest (never the hold-out)
    champion_data = {f"{r.path},{r.label},import,0" for r in load_dataset(synthetic_data)}
    assert set(train[1:]) - set(project_rows) == champion_data
    assert f"{len(champion_data)} from the champion's training data" in better.output + worse.output


def test_a_new_champion_sends_contradicted_auto_labels_back_to_review(labelstudio, tiny_champion, synthetic_data,
                                                                      tmp_path):
    from integrations import mlflow_registry
    from mlproject.loop.labels import RANK_KEY, REVOKED_KEY

    tiny_champion()
    title, _ = make_project(labelstudio, synthetic_data, 24, "revoke")
    ls = ls_client(labelstudio)
    bot = bot_id(ls)
    first = sync(title, *LOOSE, "--budget", "3", state=tmp_path / "state")
    assert first.exit_code == 0, first.output
    auto_ok = {t.id for t in read(ls, labelstudio, title)
               for a in t.annotations if a.completed_by == bot and a.choices == ("ok",)}
    assert auto_ok
    # promoted outside the loop: a model that calls everything a defect (threshold 0)
    new = tiny_champion(threshold=0.0)
    assert mlflow_registry.require("alloop-defect-classifier", "champion") == new
    second = sync(title, *LOOSE, "--class-tau", "defect=0.0", "--budget", "50", state=tmp_path / "state")
    assert second.exit_code == 0, second.output
    assert re.search(rf"auto-labels revoked\s+{len(auto_ok)}\n", second.output), second.output
    tasks = {t.id: t for t in read(ls, labelstudio, title)}
    for task_id in auto_ok:
        task = tasks[task_id]
        assert not task.annotations and "contradicted by alloop-defect-classifier/2" in task.data[REVOKED_KEY]
        assert task.data[RANK_KEY] is not None  # back in the review queue, and never machine-labelled again


def test_audit_measures_precision_raises_tau_and_revokes_the_round(labelstudio, tiny_champion, synthetic_data,
                                                                   tmp_path):
    from integrations import mlflow_rounds
    from mlproject.loop.labels import AUDIT_KEY, REVOKED_KEY
    from mlproject.loop.project import project_key

    tiny_champion()
    title, _ = make_project(labelstudio, synthetic_data, 24, "audit")
    ls = ls_client(labelstudio)
    pid, bot = project_id(ls, title), bot_id(ls)
    assert sync(title, *LOOSE, "--budget", "2", state=tmp_path / "state").exit_code == 0
    machine_before = {t.id for t in read(ls, labelstudio, title) for a in t.annotations if a.completed_by == bot}

    first = CliRunner().invoke(app, ["audit", "--project", title, "--sample", "3", "--tau", "0.7"])
    assert first.exit_code == 0, first.output
    assert "No audited auto-labels yet" in first.output and "Added 3 auto-labels" in first.output
    sampled = [t for t in read(ls, labelstudio, title) if t.data.get(AUDIT_KEY) == "yes"]
    assert len(sampled) == 3
    for task in sampled:  # the auditor disagrees with every machine label
        machine_choice = next(a.choices[0] for a in task.annotations if a.completed_by == bot)
        annotate(ls, task.id, "defect" if machine_choice == "ok" else "ok")

    second = CliRunner().invoke(app, ["audit", "--project", title, "--sample", "3", "--tau", "0.7"])
    assert second.exit_code == 0, second.output
    assert "precision 0.0%" in second.output and "tau raised to 0.8500" in second.output, second.output
    assert float(mlflow_rounds.get_setting(project_key(labelstudio.url, pid), "tau")) == pytest.approx(0.85)
    tasks = read(ls, labelstudio, title)
    audited = {t.id for t in sampled}
    for task in tasks:
        if task.id in machine_before - audited:  # round 1's other machine labels: back to review
            assert not task.annotations and task.data.get(REVOKED_KEY, "").startswith("audit: round 1")
        if task.id in audited:  # the auditors' labels stand, next to the machine's
            assert any(a.completed_by != bot for a in task.annotations)
    status = CliRunner().invoke(app, ["status", "--project", title])
    assert status.exit_code == 0, status.output
    assert "tau raised by audits: 0.85" in status.output and "    1 complete" in status.output


def test_sync_without_a_champion_says_what_to_do(labelstudio, tracking_uri, tmp_path, synthetic_data):
    folder = Path(labelstudio.document_root) / f"no-champion-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    result = sync("alloop defect inspection", state=tmp_path)
    assert result.exit_code == 1
    assert "has no champion" in result.output and "mlflow run . -e promote" in result.output


def test_predict_gives_every_task_a_prediction_once_and_names_unreadable_tasks(labelstudio, tiny_champion,
                                                                              synthetic_data, tmp_path):
    champion = tiny_champion()
    title, _ = make_project(labelstudio, synthetic_data, 12, "predict")
    ls = ls_client(labelstudio)
    pid = project_id(ls, title)
    broken = ls.projects.import_tasks(id=pid, request=[{"image": "/data/local-files/?d=no-such-folder/gone.png"}])
    assert broken.task_count == 1  # a task whose image is gone

    first = CliRunner().invoke(app, ["predict", "--project", title, "--state-dir", str(tmp_path / "state")])
    assert first.exit_code == 0, first.output
    tasks = read(ls, labelstudio, title)
    missing = [t for t in tasks if t.prediction_of(str(champion)) is None]
    assert len(tasks) == 13 and len(missing) == 1 and "gone.png" in missing[0].data["image"]
    assert "12 new predictions" in first.output and "1 unreadable" in first.output
    assert f"task {missing[0].id}:" in first.output and "does not exist" in first.output
    assert ls.projects.get(id=pid).model_version == str(champion)

    again = CliRunner().invoke(app, ["predict", "--project", title, "--state-dir", str(tmp_path / "state")])
    assert again.exit_code == 0 and "0 new predictions" in again.output, again.output
    assert sum(len(t.predictions) for t in read(ls, labelstudio, title)) == 12
