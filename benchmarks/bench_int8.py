"""Does int8 pay for fast scoring? OpenVINO int8 (NNCF post-training quantisation) against OpenVINO float32
on the suite's registered ``frozen`` models: speed per pass and validation decisions changed.

Fast scoring keeps a cheaper network only if it changes at most 0.5 % of validation decisions
(``mlproject.training.fast_scoring``). For each registered ``frozen`` version in the store (the suite's
by default), this script rebuilds that run's split from its params, calibrates NNCF on 64 of its
training images, and scores the validation split through both networks at the model's threshold.
Recipes (:data:`RECIPES`): ``all`` (NNCF's defaults: every convolution and the head's matrix products),
``convolutions`` (the head kept in float), and narrower ones. Nothing here is a choice the product makes;
it measures whether int8 could be offered. Needs ``pip install nncf`` (not a project dependency).

Usage: python benchmarks/bench_int8.py [--store benchmarks/out/suite.db] [--versions 1,2,3,4] [--recipes all,convolutions]
Writes the ``--key`` ("int8") key of benchmarks/results/stream.json (other keys are kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]
from provenance import git_commit  # noqa: E402  (beside this script)
from suite import machine_description  # noqa: E402

from mlproject.models.openvino_network import INFER_CHUNK  # noqa: E402
RESULTS = REPO / "benchmarks" / "results" / "stream.json"
CALIBRATION_IMAGES = 64


def scores(network, images: np.ndarray) -> tuple[np.ndarray, float]:
    """P(defect) per image and images/s through a compiled network (as the registered model runs it)."""
    network(images[:INFER_CHUNK])  # kernels built for this batch shape outside the timing
    started = time.perf_counter()
    p_defect = network(images)[:, 0]
    return p_defect, len(images) / (time.perf_counter() - started)


#: What each recipe keeps in float (NNCF's defaults otherwise: per-channel int8 weights, int8 activations).
RECIPES = {
    "all": "nothing: every convolution and the head's matrix products quantised",
    "convolutions": "the head's matrix products",
    "no_first": "the head and the first convolution (the preprocessed image's range)",
    "mixed": "the head; asymmetric activation ranges (NNCF's MIXED preset)",
    "blocks12": "the head and every convolution after block 2 (int8 in blocks 1-2 only)",
}


def recipe_options(nncf, network, recipe: str) -> dict:
    if recipe not in RECIPES:
        raise SystemExit(f"unknown recipe {recipe!r}: one of {', '.join(RECIPES)}")
    convolutions = [op.get_friendly_name() for op in network.get_ordered_ops() if op.get_type_name() == "Convolution"]
    keep = {"all": None, "convolutions": [], "no_first": convolutions[:1], "mixed": [], "blocks12": convolutions[4:]}[recipe]
    options = {} if keep is None else {"ignored_scope": nncf.IgnoredScope(types=["MatMul"], names=keep)}
    if recipe == "mixed":
        options["preset"] = nncf.QuantizationPreset.MIXED
    return options


def measure(version, client, model_name: str, recipes: list[str]) -> dict:
    import mlflow
    import nncf
    from sklearn.metrics import balanced_accuracy_score

    from mlproject.data.decode import vgg_preprocess
    from mlproject.data.images import load_images
    from mlproject.data.loaders import load_dataset
    from mlproject.data.split import stratified_split
    from mlproject.models.openvino_network import compile_converted, convert_network

    params = client.get_run(version.run_id).data.params
    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version.version}").unwrap_python_model()
    size, fit, threshold = model.config["image_size"], model.config.get("fit", "squash"), model.config["threshold"]
    records = load_dataset(params["data"], pattern=params.get("pattern", "Class1"), layout=params.get("layout", "auto"))
    split = stratified_split(records, seed=int(params["split_seed"]), val_fraction=float(params["val_fraction"]),
                             test_fraction=float(params["test_fraction"]))
    every = max(1, len(split.train) // CALIBRATION_IMAGES)
    calibration = load_images(split.train[::every][:CALIBRATION_IMAGES], size, progress=False, fit=fit)[0]
    val = vgg_preprocess(load_images(split.val, size, progress=False, fit=fit)[0])
    y_val = np.array([r.label == params.get("positive_label", "defect") for r in split.val])
    network, with_embeddings = convert_network(model.keras_model)
    p32, rate32 = scores(compile_converted(network, with_embeddings, "float32"), val)
    row = {"version": int(version.version), "data": Path(params["data"]).name, "image_size": size,
           "val_images": len(val), "threshold": threshold, "float32_images_per_s": round(rate32, 3),
           # a check that the inputs are what the model was trained on: about its validation figure
           "float32_val_balanced_accuracy": round(balanced_accuracy_score(y_val, p32 >= threshold), 3)}
    batches = [vgg_preprocess(calibration[s : s + INFER_CHUNK]) for s in range(0, len(calibration), INFER_CHUNK)]
    for recipe in recipes:
        options = recipe_options(nncf, network, recipe)
        started = time.perf_counter()
        quantized = nncf.quantize(network, nncf.Dataset(batches), subset_size=len(batches), **options)
        quantize_s = time.perf_counter() - started
        p8, rate8 = scores(compile_converted(quantized, with_embeddings, "float32"), val)
        flips = np.flatnonzero((p8 >= threshold) != (p32 >= threshold))
        row[recipe] = {"quantise_s": round(quantize_s, 1), "int8_images_per_s": round(rate8, 3),
                       "speedup": round(rate8 / rate32, 2), "val_flips": int(len(flips)),
                       "val_flip_share": round(len(flips) / len(val), 3),
                       "max_abs_diff": round(float(np.abs(p8 - p32).max()), 3),
                       "median_abs_diff": round(float(np.median(np.abs(p8 - p32))), 3),
                       "flipped": [Path(split.val[i].path).name for i in flips][:20]}
        print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=REPO / "benchmarks" / "out" / "suite.db")
    parser.add_argument("--model-name", default="alloop-defect-classifier")
    parser.add_argument("--versions", default="", help="comma-separated versions; default: every frozen one")
    parser.add_argument("--recipes", default="all,convolutions", help="comma-separated, of: " + ", ".join(RECIPES))
    parser.add_argument("--key", default="int8", help="the key of benchmarks/results/stream.json written")
    args = parser.parse_args()
    try:
        import nncf  # noqa: F401
    except ImportError:
        sys.exit("this benchmark needs NNCF: pip install nncf")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{args.store.resolve()}")
    client = MlflowClient()
    wanted = {v.strip() for v in args.versions.split(",") if v.strip()}

    def chosen(version) -> bool:
        if wanted:
            return str(version.version) in wanted
        return client.get_run(version.run_id).data.tags.get("variant") == "frozen"

    versions = [v for v in client.search_model_versions(f"name='{args.model_name}'") if chosen(v)]
    if not versions:
        sys.exit(f"no matching versions of {args.model_name} in {args.store}: run benchmarks/suite.py --variants frozen")
    rows = [measure(v, client, args.model_name, args.recipes.split(",")) for v in sorted(versions, key=lambda v: int(v.version))]
    result = {"date": dt.date.today().isoformat(), "commit": git_commit(), "machine": machine_description(),
              "command": "python benchmarks/bench_int8.py " + " ".join(sys.argv[1:]),
              "calibration_images": CALIBRATION_IMAGES,
              "recipes": {name: "kept in float: " + RECIPES[name] for name in args.recipes.split(",")}, "rows": rows}
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    stored[args.key] = result  # read-modify-write: other benchmarks keep their keys in this file
    RESULTS.write_text(json.dumps(stored, indent=2) + "\n")


if __name__ == "__main__":
    main()
