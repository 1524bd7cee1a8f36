"""`alloop sync` bookkeeping on PostgreSQL vs SQLite, in one run (issue 18).

The same measurement as bench_sync.py (its project, tiny champion, simulated annotator and summary are
reused), once per database: Label Studio and MLflow both on SQLite (the default), then both on a local
PostgreSQL cluster (``ALLOOP_DB=postgres``; `integrations.postgres`). Each backend gets fresh stores, a
fresh Label Studio and its own tiny champion; then, for each size, a new project and two rounds of
``run_round``: round 1 (cold: every task predicted, predictions and auto-labels written) and round 2
(steady: predictions and embeddings cached, so the database and Label Studio's API are what is left).
Bookkeeping = wall - inference - model load; every step's seconds come from the round report.

    .venv/bin/python benchmarks/bench_sync_db.py --sizes 10000

Writes benchmarks/out/sync_db/bench_sync_db.json and the key "postgres" of benchmarks/results/scaleout.json
(read-modify-write: other keys of that file are kept).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sync import DAGM, MODEL, annotate_queue, make_project, register_tiny_champion, summarise  # noqa: E402
from local_labelstudio import start_label_studio  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "sync_db"
SCALEOUT = REPO / "benchmarks" / "results" / "scaleout.json"
BACKENDS = ("sqlite", "postgres")


def tracking_store(backend: str, out: Path) -> str:
    """Point MLflow (and Label Studio, through ALLOOP_DB) at ``backend``; the MLflow tracking URI."""
    from integrations import postgres
    from integrations.processes import free_port

    os.environ[postgres.DB_ENV] = backend
    if backend == "sqlite":
        return f"sqlite:///{out / 'mlflow.db'}"
    path = out / "postgres.json"
    os.environ[postgres.SETTINGS_ENV] = str(path)  # Label Studio's start finds the cluster there
    out.chmod(0o755)  # as root the server runs as the postgres user, who must enter this folder
    settings = postgres.start(port=free_port(), path=path, say=print)
    os.environ.update(postgres.client_env(settings))  # `mlflow run` children log in with it too
    return postgres.mlflow_backend_uri(settings)


def copy_images(document_root: Path) -> dict[str, str]:
    from mlproject.data.loaders import load_dagm

    (document_root / "dagm").mkdir(parents=True, exist_ok=True)
    truth = {}
    for record in load_dagm(DAGM):
        name = Path(record.path).name
        truth[name] = record.label
        if not (document_root / "dagm" / name).exists():
            shutil.copy(record.path, document_root / "dagm" / name)
    return truth


def measure(backend: str, sizes: list[int]) -> dict:
    import mlflow
    from label_studio_sdk.client import LabelStudio

    from integrations import postgres
    from integrations.labelstudio.project import Connection
    from integrations.labelstudio.server import stop
    from mlproject.loop.options import SyncOptions
    from mlproject.loop.policy import PolicyConfig
    from mlproject.loop.project import open_project
    from mlproject.loop.sync import run_round

    out = OUT / backend
    if out.exists():
        if backend == "postgres":
            postgres.stop(out / "postgres.json")
        shutil.rmtree(out)  # fresh stores: both backends start from nothing
    out.mkdir(parents=True)
    uri = tracking_store(backend, out)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        started = time.perf_counter()
        settings = start_label_studio(out)
        result = {"tracking_uri": uri, "label_studio_start_s": round(time.perf_counter() - started, 1), "sizes": {}}
        truth = copy_images(Path(settings.document_root))
        result["champion"] = str(register_tiny_champion())
        ls = LabelStudio(base_url=settings.url, api_key=settings.api_key)
        connection = Connection(settings.url, settings.api_key, settings.document_root)
        options = SyncOptions(model_name=MODEL, state_dir=out / "state", progress=False,
                              policy=PolicyConfig(tau=0.6, cluster_confidence=0.6, cluster_agreement=0.6,
                                                  max_auto_per_class=100, human_budget=20),
                              retrain_after=10**6)
        for size in sizes:
            t0 = time.perf_counter()
            project_id = make_project(ls, size, sorted(truth))
            rounds = {"import_s": round(time.perf_counter() - t0, 1)}
            project = open_project(connection, str(project_id))
            for name in ("round1_cold", "round2_steady"):
                t0 = time.perf_counter()
                report = run_round(project, options)
                rounds[name] = summarise(report, time.perf_counter() - t0)
                print(backend, size, name, json.dumps(rounds[name]), flush=True)
                if name == "round1_cold":
                    rounds["answered_by_simulated_annotator"] = annotate_queue(ls, project_id, truth)
            result["sizes"][str(size)] = rounds
        return result
    finally:
        stop(out / "labelstudio.json")
        if backend == "postgres":
            print(postgres.stop(out / "postgres.json"))
        mlflow.set_tracking_uri(None)


def comparison(results: dict) -> dict:
    """Per size and round: bookkeeping seconds on each backend and PostgreSQL's ratio to SQLite."""
    table = {}
    for size, rounds in results["sqlite"]["sizes"].items():
        for name in ("round1_cold", "round2_steady"):
            sqlite_s = rounds[name]["bookkeeping_s"]
            postgres_s = results["postgres"]["sizes"][size][name]["bookkeeping_s"]
            table[f"{size} {name}"] = {"sqlite_s": sqlite_s, "postgres_s": postgres_s,
                                       "postgres_over_sqlite": round(postgres_s / sqlite_s, 2) if sqlite_s else None}
    return table


def write_scaleout(entry: dict) -> None:
    from integrations.files import atomic_write

    existing = json.loads(SCALEOUT.read_text()) if SCALEOUT.exists() else {}
    existing["postgres"] = entry  # the other keys (e.g. "spark") belong to other benchmarks
    atomic_write(SCALEOUT, json.dumps(existing, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000", help="comma-separated task counts (default 10000)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    command = f".venv/bin/python benchmarks/bench_sync_db.py --sizes {args.sizes}"
    print(f"Command: {command}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = {backend: measure(backend, sizes) for backend in BACKENDS}
    entry = {"command": command, "what": "alloop sync bookkeeping (wall - inference - model load), Label Studio "
             "1.23.2 and MLflow on SQLite vs on PostgreSQL 15 (local cluster), same run, same tiny champion recipe",
             "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
             "total_s": round(time.perf_counter() - started, 1), "comparison": comparison(results), **results}
    (OUT / "bench_sync_db.json").write_text(json.dumps(entry, indent=2))
    write_scaleout(entry)
    print(json.dumps(entry["comparison"], indent=2))
    print(f"Wrote {OUT / 'bench_sync_db.json'} and key 'postgres' of {SCALEOUT}")


if __name__ == "__main__":
    main()
