"""Lifecycle benchmark on real DAGM 2007 class 1 with HED-pretrained VGG16 weights.

Runs the real entry points (`mlflow run . -e X --env-manager local`) against a benchmark tracking
store and records, per step, a JSON file under ``--out``:

* ``svm``, ``frozen``, ``finetune``: the seed-format table and metrics on the fixed test split;
* ``speed``: ``finetune`` with cached frozen outputs vs without, same data, same epochs, same run
  of this script (wall time ratio and test balanced accuracy of both);
* ``pyfunc``: images/s of the registered pyfunc (bytes in) vs raw Keras ``predict`` on the same images.

Usage: python benchmarks/bench_lifecycle.py --data ../shared/data/dagm --steps svm,frozen,finetune,speed,pyfunc
(speed512: the same comparison at the `finetune` step's settings, about 2 h here;
finetune-augmented: the `finetune` step with augment=true on cached outputs, about 2.4 h here)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout

# Variant settings under test (kept here so RESULTS.md can quote them).
COMMON = {"pattern": "Class1", "weights": "hed", "split_seed": 0, "seed": 0}
STEPS = {
    "svm": ("svm", {"image_size": 512, "pooling": "stats", "feature_layers": "block3_pool,block4_pool",
                    "kernel": "linear", "C": 1.0}),
    "svm224": ("svm", {"image_size": 224, "pooling": "avg", "feature_layers": "block5_pool", "C": 1.0}),
    "frozen": ("frozen", {"image_size": 512, "pooling": "stats", "epochs": 40, "patience": 6, "dropout": 0.3}),
    "frozen224": ("frozen", {"image_size": 224, "pooling": "avgmax", "epochs": 40, "patience": 6}),
    "finetune": ("finetune", {"image_size": 512, "pooling": "stats", "trainable_blocks": 1, "warmup_epochs": 8,
                              "epochs": 20, "patience": 5, "lr_finetune": 5e-5, "dropout": 0.3}),
}
# the same with all 8 flip/rotation views of the training images cached (about 2.4 h here at 512 px),
# scored as the mean over the 8 views (~40 min more: 201 validation and test images x 8 views)
STEPS["finetune-augmented"] = ("finetune", {**STEPS["finetune"][1], "augment": "true",
                                            "cache_frozen_outputs": "true", "test_time_views": 8})
SPEED = {
    # short and cheap: both paths stay at chance quality at 224 px
    "speed": {"image_size": 224, "pooling": "avg", "trainable_blocks": 1, "warmup_epochs": 3, "epochs": 10,
              "patience": 100, "lr_finetune": 1e-4},
    # the `finetune` step's settings, where the model does learn class 1 (uncached side: ~1.5 h here)
    "speed512": STEPS["finetune"][1],
}


def mlflow_run(entry_point: str, params: dict, experiment: str) -> tuple[str, float, str]:
    command = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry_point, "--env-manager", "local",
               "--experiment-name", experiment]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=200)
    run = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)  # not a search trial
    return run.info.run_id, seconds, " ".join(command[2:])


def run_metrics(run_id: str) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(run_id)
    table = Path(client.download_artifacts(run_id, "evaluation/classification_report.txt")).read_text()
    return {"metrics": {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}, "table": table,
            "registered": run.data.tags.get("registered_model", "")}


def step_variant(name: str, data: str, out: Path, seed: int = 0) -> dict:
    entry_point, params = STEPS[name]
    label = name if seed == 0 else f"{name}-seed{seed}"
    run_id, seconds, command = mlflow_run(entry_point, {**COMMON, **params, "seed": seed, "data": data,
                                                        "registered_model_name": f"bench-{label}"}, "bench-variants")
    return {"step": label, "seed": seed, "command": command, "wall_s": seconds, "run_id": run_id,
            **run_metrics(run_id)}


def step_speed(name: str, data: str, out: Path, uncached_probe: bool = False) -> dict:
    """``finetune`` with cached frozen outputs, then without: same data, settings and machine.

    ``uncached_probe``: the uncached side runs 1 warm-up and 2 fine-tuning epochs only and its
    complete run is extrapolated to the epochs the cached run took (its wall time is hours here).
    """
    results = {}
    for cache in ("true", "false"):
        params = {**COMMON, **SPEED[name], "data": data, "cache_frozen_outputs": cache,
                  "registered_model_name": f"bench-{name}-cache-{cache}"}
        if cache == "false" and uncached_probe:
            params.update(warmup_epochs=1, epochs=2, registered_model_name=f"bench-{name}-probe-uncached")
        run_id, seconds, command = mlflow_run("finetune", params, f"bench-{name}")
        results[cache] = {"command": command, "wall_s": seconds, "run_id": run_id, **run_metrics(run_id),
                          "phases": run_phases(run_id)}
        print(f"cache_frozen_outputs={cache}: {seconds:.1f} s", flush=True)
    cached, uncached = results["true"], results["false"]
    result = {"step": name, "cached": cached, "uncached": uncached}
    if uncached_probe:
        result["uncached_extrapolated_s"] = extrapolate_run(uncached["phases"], cached["phases"])
        result["speedup_extrapolated"] = result["uncached_extrapolated_s"] / cached["phases"]["run_s"]
        result["speedup_fine_tuning_epoch"] = (uncached["phases"]["finetune_epoch_seconds_mean"]
                                               / cached["phases"]["finetune_epoch_seconds_mean"])
    else:
        result["speedup"] = uncached["wall_s"] / cached["wall_s"]
    return result


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def run_phases(run_id: str) -> dict:
    """The run's seconds before its first epoch, in each phase's epochs, and after its last epoch.

    From the run's start/end times and the timestamps of the per-epoch ``epoch_seconds`` metric.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(run_id)
    epochs = sorted(client.get_metric_history(run_id, "epoch_seconds"), key=lambda m: m.step)
    # runs before the warmup_epochs_run metric existed ran all their warm-up epochs
    boundary = int(run.data.metrics.get("warmup_epochs_run", run.data.params["warmup_epochs"]))
    phases = {"warmup_epoch_seconds": [m.value for m in epochs[:boundary]],
              "finetune_epoch_seconds": [m.value for m in epochs[boundary:]]}
    first, last = epochs[0], max(epochs, key=lambda m: m.timestamp)
    return {"run_s": (run.info.end_time - run.info.start_time) / 1000,
            "before_s": (first.timestamp - run.info.start_time) / 1000 - first.value,
            "after_s": (run.info.end_time - last.timestamp) / 1000,
            **phases,
            **{f"{name}_n": len(values) for name, values in phases.items()},
            **{f"{name}_mean": mean(values) for name, values in phases.items() if values}}


def extrapolate_run(probe: dict, complete: dict) -> float:
    """Seconds the probed run would take with as many epochs of each phase as the complete run."""
    return (probe["before_s"] + probe["after_s"]
            + complete["warmup_epoch_seconds_n"] * probe["warmup_epoch_seconds_mean"]
            + complete["finetune_epoch_seconds_n"] * probe["finetune_epoch_seconds_mean"])


def step_pyfunc(data: str, out: Path, n_images: int = 96, repeats: int = 3) -> dict:
    """Registered pyfunc (PNG bytes in, decoding included) vs Keras predict on preprocessed arrays."""
    import numpy as np
    import pandas as pd

    from integrations import mlflow_registry
    from mlproject.data.decode import resize, decode_image, vgg_preprocess
    from mlproject.data.loaders import load_dataset

    ref = mlflow_registry.require("bench-frozen", "challenger")
    model = mlflow_registry.load_pyfunc(ref)
    python_model = model.unwrap_python_model()
    size = int(python_model.config["image_size"])
    records = load_dataset(data, pattern="Class1")[:n_images]
    raw = [Path(r.path).read_bytes() for r in records]
    arrays = vgg_preprocess(np.stack([resize(decode_image(b), size) for b in raw]))
    frame = pd.DataFrame({"image": raw})
    keras_model = python_model.keras_model
    model.predict(frame.iloc[:4])
    keras_model.predict(arrays[:4], verbose=0)  # warm both up
    timings = {"pyfunc": [], "keras_predict": []}
    for _ in range(repeats):  # interleaved so both see the same machine load
        started = time.perf_counter()
        p_pyfunc = model.predict(frame)["p_defect"].to_numpy()
        timings["pyfunc"].append(time.perf_counter() - started)
        started = time.perf_counter()
        p_keras = keras_model.predict(arrays, batch_size=32, verbose=0)[:, 0]
        timings["keras_predict"].append(time.perf_counter() - started)
    best = {k: min(v) for k, v in timings.items()}
    return {"step": "pyfunc", "model": str(ref), "image_size": size, "n_images": n_images, "repeats": repeats,
            "images_per_s": {k: n_images / v for k, v in best.items()},
            "ratio_pyfunc_over_keras": best["keras_predict"] / best["pyfunc"],
            "max_abs_diff": float(np.abs(p_pyfunc - p_keras).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dagm"))
    parser.add_argument("--steps", default="svm,frozen,pyfunc,finetune,speed")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed of the variant steps (the split stays split_seed 0); "
                             "not 0: model and output file are named <step>-seed<N>")
    parser.add_argument("--uncached-probe", action="store_true",
                        help="speed steps: run the uncached side for 1 warm-up + 2 fine-tuning epochs and "
                             "extrapolate its complete run (speed512's complete uncached side takes hours here)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    for step in args.steps.split(","):
        print(f"=== {step} ===", flush=True)
        started = time.perf_counter()
        if step in STEPS:
            result = step_variant(step, args.data, out, args.seed)
        elif step in SPEED:
            result = step_speed(step, args.data, out, args.uncached_probe)
        elif step == "pyfunc":
            result = step_pyfunc(args.data, out)
        else:
            raise SystemExit(f"unknown step {step}")
        result["step_wall_s"] = time.perf_counter() - started
        (out / f"{result['step']}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2)[:3000], flush=True)
        if "table" in result:
            print(result["table"], flush=True)


if __name__ == "__main__":
    main()
