"""Validation-only comparison of the `svm` search's pick and the suite baseline's recipe on one dataset.

Asks whether the validation split could have told that `svm` would trail the baseline on test. The
suite split (`split_seed=0`) is rebuilt; **its test part is never loaded**. For each image size:
frozen HED stats of block3-5 for train and val; the baseline recipe (mean/std/max, log1p, standardised,
balanced logistic regression, C=1) and the `svm` search + calibrated fit as the entry point runs them,
both fitted on train and scored by validation ROC AUC.

Usage: python benchmarks/svm_vs_baseline_val.py neu_steel-inclusion --sizes 200,224
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout
from suite import baseline_model, baseline_view, stats_extractor, stats_of, suite_split  # noqa: E402  (beside this script)


def compare(dataset: str, size: int) -> dict:
    from sklearn.metrics import roc_auc_score

    from mlproject.training.svm_training import SvmSettings, fit_svm, search_svm

    split = suite_split(dataset)
    extractor, widths = stats_extractor(size)
    # split.test is never loaded
    x_train, y_train = stats_of(extractor, split.train, size, f"train {size}px")
    x_val, y_val = stats_of(extractor, split.val, size, f"val {size}px")
    logistic = baseline_model().fit(baseline_view(x_train, widths), y_train)
    # the validation-only search: this script shows how little validation alone separates the candidates
    search = search_svm((x_train, y_train), (x_val, y_val), SvmSettings(search_data="val"))
    svm = fit_svm(x_train, y_train, C=search.C, kernel=search.kernel, log_features=True)
    return {"dataset": dataset, "image_size": size, "val_defects": int(y_val.sum()),
            "baseline_val_roc_auc": float(roc_auc_score(y_val, logistic.predict_proba(baseline_view(x_val, widths))[:, 1])),
            "svm_val_roc_auc": float(roc_auc_score(y_val, svm.predict_proba(x_val)[:, 1])),
            "svm_C": search.C, "svm_kernel": search.kernel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a suite dataset name, e.g. casting_impeller or neu_steel-inclusion")
    parser.add_argument("--sizes", default="224")
    args = parser.parse_args()
    for size in args.sizes.split(","):
        print(json.dumps(compare(args.dataset, int(size))), flush=True)


if __name__ == "__main__":
    main()
