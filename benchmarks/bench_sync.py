"""`alloop sync` bookkeeping time on large projects in a real Label Studio.

For each size (default 2,000 and 10,000 tasks) a fresh project gets that many tasks whose images
cycle through the real DAGM class 1 images (local files under the server's document root). Two
rounds run through the same code as `alloop sync` (``run_round``):

* round 1 (cold): every task is predicted (inference), predictions are written, the plan is made,
  auto-labels and the review queue are written;
* a simulated annotator answers the review queue through the API (so round 2 is a real new round);
* round 2 (steady state): predictions exist; the embeddings come from the cache.

Bookkeeping = the round's wall time minus inference (reading the images and the model's forward
pass) and minus loading the model. With ``--champion-dir`` a real model scores the stream and the
round's inference share is what is measured. Without it the model is deliberately tiny (random VGG16 weights, 32 px,
trained on DAGM class 1 by the `svm` entry point): what is measured here is the loop's own work, which does not
depend on the model; loose thresholds make the auto-label cap (100 per class) the binding limit, the
most writes a round can make.

    .venv/bin/python benchmarks/bench_sync.py --sizes 2000,10000
    .venv/bin/python benchmarks/bench_sync.py --sizes 2000 --champion-dir benchmarks/out/scoring_model   # real inference

Writes benchmarks/out/bench_sync.json; the figures go into benchmarks/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from local_labelstudio import start_label_studio  # noqa: E402  (beside this script)

OUT = REPO / "benchmarks" / "out" / "sync"
DAGM = REPO.parent / "shared" / "data" / "dagm"
MODEL = "bench-sync-tiny"


def register_tiny_champion():
    """Random-weight VGG16 (32 px) + SVM on DAGM class 1 through the real `svm` entry point, made champion."""
    from integrations import mlflow_registry
    from integrations.mlflow_runs import run_entry_point

    existing = mlflow_registry.resolve(MODEL, mlflow_registry.CHAMPION)
    if existing is not None:
        return existing
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # mlflow run's python
    run_entry_point("svm", {"data": str(DAGM), "weights": "none", "image_size": 32, "pooling": "avgmax",
                            "threshold": 0.5, "registered_model_name": MODEL}, experiment="bench-sync")
    ref = mlflow_registry.require(MODEL, mlflow_registry.CHALLENGER)
    mlflow_registry.set_alias(ref, mlflow_registry.CHAMPION)
    return ref


def register_saved_champion(model_dir: Path, name: str):
    """A saved pyfunc model (``bench_scoring.py --keep-model``: the 512-px, 8-view recipe; or a
    registered one, ``mlflow artifacts download -u models:/NAME/VERSION``) logged and registered here
    as ``name``'s champion: the stream is then scored by a real model, with its fast scoring."""
    import json as json_

    import mlflow

    from integrations import mlflow_registry
    from mlproject.registry.pyfunc import SIGNATURE, DefectClassifierModel, package_dir, pip_requirements

    existing = mlflow_registry.resolve(name, mlflow_registry.CHAMPION)
    if existing is not None:
        return existing
    artifacts_dir = model_dir / "artifacts"
    config_path = artifacts_dir / "model_config.json"
    config = json_.loads(config_path.read_text())
    artifacts = {"keras_model": str(next(artifacts_dir.glob("*.keras"))), "model_config": str(config_path)}
    if (artifacts_dir / "svm.joblib").exists():
        artifacts["sklearn_model"] = str(artifacts_dir / "svm.joblib")
    mlflow.set_experiment("bench-sync")
    with mlflow.start_run(run_name=f"saved-{model_dir.name}"):
        info = mlflow.pyfunc.log_model(name="model", python_model=DefectClassifierModel(), artifacts=artifacts,
                                       code_paths=[package_dir()], signature=SIGNATURE,
                                       pip_requirements=pip_requirements(),
                                       model_config={"model_version": config.get("model_version", "")})
    ref = mlflow_registry.register(info.model_uri, name, tags={"variant": config["variant"],
                                                               "image_size": config["image_size"]})
    mlflow_registry.set_alias(ref, mlflow_registry.CHAMPION)
    return ref


def make_project(ls, size: int, images: list[str]) -> int:
    from integrations.labelstudio.project import image_choices_config

    project = ls.projects.create(title=f"bench sync {size} {int(time.time())}",
                                 label_config=image_choices_config(["defect", "ok"]))
    tasks = [{"image": f"/data/local-files/?d=dagm/{images[i % len(images)]}", "copy": i} for i in range(size)]
    for start in range(0, size, 2000):
        ls.projects.import_tasks(id=project.id, request=tasks[start : start + 2000])
    return project.id


def annotate_queue(ls, project_id: int, truth: dict[str, str]) -> int:
    view = next(v for v in ls.views.list(project=project_id) if v.data["title"] == "Needs review")
    answered = 0
    for task in ls.tasks.list(project=project_id, view=view.id, fields="task_only"):
        name = task.data["image"].rsplit("/", 1)[-1]
        ls.annotations.create(id=task.id, result=[{"from_name": "label", "to_name": "image", "type": "choices",
                                                   "value": {"choices": [truth[name]]}}])
        answered += 1
    return answered


def summarise(report, wall: float) -> dict:
    seconds = dict(report.timings)
    excluded = seconds.get("inference", 0.0) + seconds.get("load_model", 0.0)
    return {"wall_s": round(wall, 1), "bookkeeping_s": round(wall - excluded, 1),
            "steps_s": {k: round(v, 1) for k, v in sorted(seconds.items())},
            "counts": {k: v for k, v in report.counts.items() if not k.startswith("plan.")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,10000")
    parser.add_argument("--champion-dir", type=Path, default=None,
                        help="a pyfunc model folder (bench_scoring.py --keep-model) to score with instead of the "
                             "tiny model: inference is then real and its share of the round is what is measured")
    args = parser.parse_args()
    model_name = MODEL if args.champion_dir is None else f"bench-sync-{args.champion_dir.name}"
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{OUT / 'mlflow.db'}"
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    from label_studio_sdk.client import LabelStudio

    from integrations.labelstudio.project import Connection
    from integrations.labelstudio.server import stop
    from mlproject.data.loaders import load_dagm
    from mlproject.loop.policy import PolicyConfig
    from mlproject.loop.options import SyncOptions
    from mlproject.loop.project import open_project
    from mlproject.loop.sync import run_round

    settings = start_label_studio(OUT)
    try:
        (OUT / "files" / "dagm").mkdir(parents=True, exist_ok=True)
        records = load_dagm(DAGM)
        truth = {}
        for record in records:
            name = Path(record.path).name
            truth[name] = record.label
            target = OUT / "files" / "dagm" / name
            if not target.exists():
                shutil.copy(record.path, target)
        champion = register_tiny_champion() if args.champion_dir is None else register_saved_champion(
            args.champion_dir.resolve(), model_name)
        ls = LabelStudio(base_url=settings.url, api_key=settings.api_key)
        connection = Connection(settings.url, settings.api_key, settings.document_root)
        options = SyncOptions(model_name=model_name, state_dir=OUT / "state", progress=False,
                              policy=PolicyConfig(tau=0.6, cluster_confidence=0.6, cluster_agreement=0.6,
                                                  max_auto_per_class=100, human_budget=20),
                              retrain_after=10**6)
        results = {"champion": str(champion), "champion_dir": str(args.champion_dir or ""), "sizes": {}}
        for size in [int(s) for s in args.sizes.split(",")]:
            started = time.perf_counter()
            project_id = make_project(ls, size, sorted(truth))
            import_s = time.perf_counter() - started
            project = open_project(connection, str(project_id))
            rounds = {}
            for name in ("round1_cold", "round2_steady"):
                t0 = time.perf_counter()
                report = run_round(project, options)
                rounds[name] = summarise(report, time.perf_counter() - t0)
                print(size, name, json.dumps(rounds[name]), flush=True)
                if name == "round1_cold":
                    rounds["answered_by_simulated_annotator"] = annotate_queue(ls, project_id, truth)
            results["sizes"][size] = {"import_s": round(import_s, 1), **rounds}
        (OUT / ("bench_sync.json" if args.champion_dir is None else f"bench_sync_{args.champion_dir.name}.json")
         ).write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
    finally:
        stop(OUT / "labelstudio.json")


if __name__ == "__main__":
    main()
