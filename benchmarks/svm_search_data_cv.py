"""What the `svm` search scores its trials on, compared without the test split.

The search scores each (C, kernel) on the validation split alone (fit on train): a few dozen defects
on most datasets, so many trials tie or differ by one image. The alternative, ``search_data=
"train+val_cv"``, scores each trial by stratified k-fold cross-validation over train + validation
together: every image held out once, five to six times as many held-out images.

As in ``operating_point_cv.py``: per dataset, the suite's split (`split_seed=0`) with its **test part
dropped before anything is computed**; frozen HED features (stats of block3-5) of the rest; then,
`--repeats` times, a stratified pseudo-train / pseudo-val / pseudo-test split (0.65 / 0.15 / 0.2). For
each search-data choice: the search, the fit on pseudo-train, the pooled operating point (pseudo-val
+ out-of-fold pseudo-train scores, the entry point's rule), and pseudo-test balanced accuracy and ROC
AUC. For reference, the suite's baseline (balanced logistic regression on the same features' mean /
std / max, threshold 0.5) fitted on pseudo-train.

Usage: python benchmarks/svm_search_data_cv.py --datasets dagm,casting_impeller,elpv_solar,neu_steel-inclusion
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout
from operating_point_cv import OUT, features_without_test, threshold_rules  # noqa: E402  (beside this script)
from suite import DATASETS, baseline_model, baseline_view  # noqa: E402

#: channels of block3_pool, block4_pool, block5_pool (the stats layers), for the baseline's view
STATS_WIDTHS = [256, 512, 512]


def one_repeat(x, y, seed: int, choices: list[str], folds: int) -> dict:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    from mlproject.training.svm_training import SvmSettings, search_svm

    rest, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=0.15 / 0.8, stratify=y[rest], random_state=seed)
    row: dict = {"seed": seed}
    for choice in choices:
        started = time.perf_counter()
        search = search_svm((x[train], y[train]), (x[val], y[val]),
                            SvmSettings(seed=seed, search_data=choice, search_folds=folds))
        seconds = time.perf_counter() - started
        scored = threshold_rules(x, y, train, val, test, search.C, search.kernel, seed)
        row[choice] = {"C": search.C, "kernel": search.kernel, "search_data": search.search_data,
                       "search_s": round(seconds, 1), "test_auc": scored["test_auc"],
                       "pooled_bacc": scored["pooled_bacc"]}
    model = baseline_model().fit(baseline_view(x[train], STATS_WIDTHS), y[train])
    p = model.predict_proba(baseline_view(x[test], STATS_WIDTHS))[:, 1]
    row["baseline"] = {"test_auc": float(roc_auc_score(y[test], p)),
                       "pooled_bacc": float(balanced_accuracy_score(y[test], (p >= 0.5).astype(int)))}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    choices = ["val", "train+val_cv"]
    path = OUT / "svm_search_data_cv.json"
    report = json.loads(path.read_text()) if path.exists() else {}  # a rerun of some datasets keeps the others
    for dataset in args.datasets.split(","):
        started = time.perf_counter()
        x, y = features_without_test(dataset, args.image_size)
        rows = [one_repeat(x, y, seed, choices, args.folds) for seed in range(args.repeats)]
        means = {name: {key: float(np.mean([r[name][key] for r in rows])) for key in ("pooled_bacc", "test_auc")}
                 for name in [*choices, "baseline"]}
        for name in choices:
            means[name]["search_s"] = float(np.mean([r[name]["search_s"] for r in rows]))
        report[dataset] = {"repeats": rows, "mean": means, "seconds": round(time.perf_counter() - started, 1)}
        print(dataset, json.dumps(means), flush=True)
        OUT.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
