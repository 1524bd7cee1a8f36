"""The dataset suite: each variant with its defaults (only ``data`` and ``weights=hed`` given) on every
binary dataset of ``../shared/data`` and on one-vs-rest views of the multi-class one, against a
frozen-features baseline computed in the same run.

    python benchmarks/suite.py --variants svm                 # all binary datasets
    python benchmarks/suite.py --variants svm,finetune --datasets casting_impeller

Each run is a real ``mlflow run . -e VARIANT --env-manager local -P data=... -P weights=hed`` into the
benchmark store (``benchmarks/out/suite.db``, not committed), timed from outside. The entry point's own
fixed split (``split_seed=0``) is used; the baseline re-creates that split with the product's loader and
splitter, fits on the training split only (nothing is chosen: C=1) and is scored on the same test
split: per-channel mean / std / max of block3-5 pooled HED-VGG16 outputs at 224 px, log1p,
standardised, a balanced logistic regression.

Writes ``benchmarks/results/suite.json`` (the rows, date, commit, machine) and the table between the
suite markers in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from provenance import git_commit  # noqa: E402  (beside this script)
DATA_ROOT = REPO.parent / "shared" / "data"
OUT = REPO / "benchmarks" / "out"
RESULTS_JSON = REPO / "benchmarks" / "results" / "suite.json"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
#: One-vs-rest views of the multi-class neu_steel (the entry points are binary for now): the class
#: is the one whose images hold no boxes of another class (its README), so its label is clean.
ONE_VS_REST = {"neu_steel-inclusion": ("neu_steel", "inclusion")}
#: The binary datasets of the suite, and the one-vs-rest views above.
DATASETS = ("dagm", "casting_impeller", "elpv_solar", *ONE_VS_REST)
TARGETS = {("finetune", "dagm"): 0.99, ("finetune", "casting_impeller"): 0.99, ("finetune", "elpv_solar"): 0.92,
           ("svm", "dagm"): 0.90, ("svm", "casting_impeller"): 0.90, ("svm", "elpv_solar"): 0.85}
TIME_LIMITS_S = {"svm": 600, "finetune": 2700}



def dataset_path(dataset: str) -> Path:
    """What ``data=`` points at: the dataset's folder, or for a one-vs-rest view a labels manifest
    (``defect`` = the chosen class, ``ok`` = the rest) written under benchmarks/out."""
    if dataset not in ONE_VS_REST:
        return DATA_ROOT / dataset
    from dataclasses import replace

    from mlproject.data.loaders import load_dataset, write_manifest

    folder, positive = ONE_VS_REST[dataset]
    records = load_dataset(str(DATA_ROOT / folder))
    if positive not in {r.label for r in records}:
        raise SystemExit(f"{DATA_ROOT / folder}: no images labelled {positive!r} for the one-vs-rest view {dataset}")
    OUT.mkdir(parents=True, exist_ok=True)
    return write_manifest(OUT / f"{dataset}.csv",
                          [replace(r, label="defect" if r.label == positive else "ok") for r in records])


def run_entry_point(variant: str, dataset: str, tracking_uri: str) -> dict:
    """One default run; its wall time and the test metrics it logged."""
    from mlflow import MlflowClient

    data = dataset_path(dataset)
    run_name = f"suite-{variant}-{dataset}-{int(time.time())}"
    command = ["mlflow", "run", str(REPO), "-e", variant, "--env-manager", "local", "--experiment-name",
               f"suite-{variant}", "--run-name", run_name, "-P", f"data={data}", "-P", "weights=hed"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    log = OUT / f"{run_name}.log"
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    shown = (" ".join(command[:2] + ["."] + command[3:9] + command[11:])
             .replace(str(DATA_ROOT), "../shared/data").replace(str(REPO) + os.sep, ""))
    row = {"variant": variant, "dataset": dataset, "command": shown, "wall_s": round(seconds, 1),
           "exit_code": done.returncode, "log": str(log.relative_to(REPO))}
    if done.returncode != 0:
        return row
    # `mlflow run` names the run it created in its last line (the entry point renames it)
    found = re.findall(r"=== Run \(ID '([0-9a-f]+)'\) succeeded ===", log.read_text(errors="replace"))
    if not found:
        return {**row, "exit_code": "no run id in the log"}
    run = MlflowClient(tracking_uri).get_run(found[-1])
    metrics, params = run.data.metrics, run.data.params
    row.update(run_id=run.info.run_id, balanced_accuracy=metrics.get("test_balanced_accuracy"),
               roc_auc=metrics.get("test_roc_auc"), defect_recall=metrics.get("test_defect_recall"),
               threshold=metrics.get("operating_threshold"), image_size=params.get("image_size_used"),
               chosen={k: v for k, v in params.items() if k.endswith("_chosen")})
    return row


#: The frozen statistics the baseline reads (and the default feature layers of the entry points).
STATS_LAYERS = ("block3_pool", "block4_pool", "block5_pool")


def suite_split(dataset: str):
    """The entry points' own fixed split of a suite dataset (``split_seed=0``, 0.65 / 0.15 / 0.2)."""
    from mlproject.data.loaders import load_dataset
    from mlproject.data.split import stratified_split

    return stratified_split(load_dataset(str(dataset_path(dataset))), seed=0, val_fraction=0.15, test_fraction=0.2)


def stats_extractor(size: int):
    """HED-VGG16 with stats pooling of :data:`STATS_LAYERS`, and each layer's channel count."""
    from mlproject.models.variants import build_feature_extractor

    extractor = build_feature_extractor("hed", size, feature_layers=STATS_LAYERS, pooling="stats")
    return extractor, [extractor.get_layer(name).output.shape[-1] for name in STATS_LAYERS]


def stats_of(extractor, records, size: int, desc: str):
    """The extractor's statistics of ``records`` (broken images skipped, as the product does) and 1 = defect."""
    import numpy as np

    from mlproject.data.images import load_images
    from mlproject.training.batches import predict_in_batches

    images, loaded, _ = load_images(records, size)
    return predict_in_batches(extractor, images, desc=desc), np.array([int(r.label == "defect") for r in loaded])


def baseline_view(stats, widths: list[int]):
    """The baseline's features from stats pooling ([mean, std, max, min] per layer): mean, std and max, log1p."""
    import numpy as np

    kept, start = [], 0
    for width in widths:
        kept.append(stats[:, start : start + 3 * width])
        start += 4 * width
    return np.log1p(np.maximum(np.concatenate(kept, axis=1), 0))


def baseline_model():
    """The baseline's classifier: nothing is chosen (C=1), so it needs no validation split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000))


def baseline(dataset: str) -> dict:
    """Frozen HED features + balanced logistic regression on the entry points' own split."""
    from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

    started = time.perf_counter()
    split = suite_split(dataset)
    extractor, widths = stats_extractor(224)
    x_train, y_train = stats_of(extractor, split.train, 224, f"baseline {dataset}")
    x_test, y_test = stats_of(extractor, split.test, 224, f"baseline {dataset}")
    model = baseline_model().fit(baseline_view(x_train, widths), y_train)
    p = model.predict_proba(baseline_view(x_test, widths))[:, 1]
    predicted = (p >= 0.5).astype(int)
    return {"variant": "baseline (frozen HED stats + balanced logistic regression, 224 px)", "dataset": dataset,
            "balanced_accuracy": float(balanced_accuracy_score(y_test, predicted)),
            "roc_auc": float(roc_auc_score(y_test, p)), "defect_recall": float(recall_score(y_test, predicted)),
            "wall_s": round(time.perf_counter() - started, 1), "command": "benchmarks/suite.py (in-process)"}


def _short(value) -> str:
    try:
        return f"{float(value):.3g}"
    except ValueError:
        return str(value)


def markdown(rows: list[dict]) -> str:
    """The table; each row says when, at which commit and by which command it was measured."""
    runs = sorted({(r["date"], r["commit"], r["machine"], r["command"]) for r in rows})
    lines = [f"Run {i + 1}: {date}, commit `{sha}`, {machine}: `{command}`" for i, (date, sha, machine, command)
             in enumerate(runs)]
    lines += ["", "| dataset | variant | balanced acc. | ROC AUC | defect recall | wall s | target | image px | chosen | run |",
              "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(value, digits=3):
        return "—" if value is None else f"{value:.{digits}f}"

    for row in rows:
        target = TARGETS.get((row["variant"], row["dataset"]))
        verdicts = []
        if target is not None and row.get("balanced_accuracy") is not None:
            verdicts.append(f"≥ {target:.2f}: {'met' if row['balanced_accuracy'] >= target else 'missed'}")
        limit = TIME_LIMITS_S.get(row["variant"])
        if limit and row.get("wall_s"):
            verdicts.append(f"≤ {limit // 60} min: {'met' if row['wall_s'] <= limit else 'missed'}")
        verdict = "; ".join(verdicts)
        chosen = ", ".join(f"{k.removesuffix('_chosen')}={_short(v)}" for k, v in (row.get("chosen") or {}).items())
        failed = f" (exit {row['exit_code']}, see {row['log']})" if row.get("exit_code") else ""
        lines.append(f"| {row['dataset']} | {row['variant']}{failed} | {cell(row.get('balanced_accuracy'))} | "
                     f"{cell(row.get('roc_auc'))} | {cell(row.get('defect_recall'))} | {cell(row.get('wall_s'), 0)} | "
                     f"{verdict} | {row.get('image_size') or ''} | {chosen} | "
                     f"{runs.index((row['date'], row['commit'], row['machine'], row['command'])) + 1} |")
    return "\n".join(lines)


def write_results(rows: list[dict], meta: dict) -> None:
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {"rows": []}
    fresh = {(r["variant"], r["dataset"]) for r in rows}
    kept = [r for r in previous.get("rows", []) if (r["variant"], r["dataset"]) not in fresh]
    merged = sorted(kept + [{**r, **meta} for r in rows], key=lambda r: (r["dataset"], r["variant"]))
    RESULTS_JSON.write_text(json.dumps({"rows": merged}, indent=1, sort_keys=True) + "\n")
    table = markdown(merged)
    text = RESULTS_MD.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + BEGIN + "\n" + table + "\n" + END + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## The dataset suite: defaults only\n\n{BEGIN}\n{table}\n{END}\n"
    RESULTS_MD.write_text(text)
    print(table)


def cpu_model() -> str:
    """The CPU's model name: wall times differ several-fold between the machines these runs land on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description() -> str:
    """Cores, CPU model and whether it computes bfloat16 natively: what each figure's speed depends on."""
    from mlproject.registry.pyfunc import native_bfloat16

    return f"{os.cpu_count()} vCPUs, {platform.machine()}, {cpu_model()}, native bfloat16: {native_bfloat16()}, no GPU"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="svm", help="comma-separated entry points")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--table", action="store_true",
                        help="only rewrite RESULTS.md's table from results/suite.json (e.g. after merging rows)")
    args = parser.parse_args(argv)
    if args.table:
        write_results([], {})  # rewrites the table from the stored rows, adds none
        return
    OUT.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{OUT / 'suite.db'}"
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "commit": git_commit(),
            "machine": machine_description(),
            "command": "python benchmarks/suite.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    rows = []
    for dataset in args.datasets.split(","):
        if not args.no_baseline:
            rows.append(baseline(dataset))
            print(json.dumps(rows[-1]))
        for variant in args.variants.split(","):
            rows.append(run_entry_point(variant, dataset, tracking_uri))
            print(json.dumps(rows[-1]))
        write_results(rows, meta)  # after every dataset: a long suite keeps what it measured


if __name__ == "__main__":
    main()
