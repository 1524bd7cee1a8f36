"""`alloop sync` bookkeeping time on large projects in a real Label Studio.

For each size (default 2,000 and 10,000 tasks) a fresh project gets that many tasks whose images
cycle through the real DAGM class 1 images (local files under the server's document root). Two
rounds run through the same code as `alloop sync` (``run_round``):

* round 1 (cold): every task is predicted (inference), predictions are written, the plan is made,
  auto-labels and the review queue are written;
* a simulated annotator answers the review queue through the API (so round 2 is a real new round);
* round 2 (steady state): predictions exist; the embeddings come from the cache.

Bookkeeping = the round's wall time minus inference (reading the images and the model's forward
pass) and minus loading the model. The model is deliberately tiny (random VGG16 weights, 32 px,
trained on DAGM class 1 by the `svm` entry point): what is measured here is the loop's own work, which does not
depend on the model; loose thresholds make the auto-label cap (100 per class) the binding limit, the
most writes a round can make.

    .venv/bin/python benchmarks/bench_sync.py --sizes 2000,10000

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
    args = parser.parse_args()
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
        champion = register_tiny_champion()
        ls = LabelStudio(base_url=settings.url, api_key=settings.api_key)
        connection = Connection(settings.url, settings.api_key, settings.document_root)
        options = SyncOptions(model_name=MODEL, state_dir=OUT / "state", progress=False,
                              policy=PolicyConfig(tau=0.6, cluster_confidence=0.6, cluster_agreement=0.6,
                                                  max_auto_per_class=100, human_budget=20),
                              retrain_after=10**6)
        results = {"champion": str(champion), "sizes": {}}
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
        (OUT / "bench_sync.json").write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
    finally:
        stop(OUT / "labelstudio.json")


if __name__ == "__main__":
    main()
