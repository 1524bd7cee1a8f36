"""Operating-point rules compared without the test split: repeated splits of train + validation only.

`threshold=auto` sets the operating point from the validation split alone, a few dozen defects on
most datasets. This script asks, on every binary dataset of the suite, whether a rule that also uses
the training split's out-of-fold scores (five times as many images) calls held-out images better.

For each dataset: the suite's split (`split_seed=0`); its **test part is dropped before anything is
computed**. Frozen HED features (stats of block3-5) of the rest; then, `--repeats` times, a stratified
split of that rest into pseudo-train / pseudo-val / pseudo-test in the entry points' proportions
(0.65 / 0.15 / 0.2). The `svm` variant's own search and fit run on pseudo-train/pseudo-val; each rule
sets a threshold; pseudo-test balanced accuracy is reported. Rules:

* ``val``: ``density_crossing_threshold`` on pseudo-val scores (`threshold=auto` today);
* ``pooled``: the same on pseudo-val scores plus pseudo-train out-of-fold scores;
* ``pooled_gap``: ``best_balanced_threshold`` (best balanced accuracy, widest gap) on the same pool.

Each rule is scored for two picks of the search: validation-AUC ties to the smallest C (the rule
until 2026-12-02) and ``hinge_*``, ties to the lowest class-balanced validation hinge loss (the default now).

Usage: python benchmarks/operating_point_cv.py --datasets dagm,casting_impeller,elpv_solar --repeats 5
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
from suite import stats_extractor, stats_of, suite_split  # noqa: E402  (beside this script)
OUT = REPO / "benchmarks" / "out"


def features_without_test(dataset: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the suite split's train + val parts (cached under benchmarks/out)."""
    cache = OUT / f"opcv-{dataset}-{size}.npz"
    if cache.exists():
        saved = np.load(cache)
        return saved["x"], saved["y"]
    split = suite_split(dataset)
    extractor, _ = stats_extractor(size)
    x, y = stats_of(extractor, split.train + split.val, size, f"features {dataset}")  # split.test never enters
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=x, y=y)
    return x, y


def threshold_rules(x, y, train, val, test, C: float, kernel: str, seed: int) -> dict:
    """Pseudo-test balanced accuracy of each threshold rule for one (C, kernel)."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from mlproject.evaluation.threshold import best_balanced_threshold, density_crossing_threshold
    from mlproject.training.svm_training import fit_svm, out_of_fold_scores

    model = fit_svm(x[train], y[train], C=C, kernel=kernel, seed=seed, log_features=True)
    p_val, p_test = model.predict_proba(x[val])[:, 1], model.predict_proba(x[test])[:, 1]
    oof = out_of_fold_scores(x[train], y[train], C=C, kernel=kernel, seed=seed, log_features=True)
    y_pool, p_pool = np.concatenate([y[val], y[train]]), np.concatenate([p_val, oof])
    thresholds = {"val": density_crossing_threshold(y[val], p_val),
                  "pooled": density_crossing_threshold(y_pool, p_pool),
                  "pooled_gap": best_balanced_threshold(y_pool, p_pool)}
    return {"test_auc": float(roc_auc_score(y[test], p_test)),
            **{f"{name}_bacc": float(balanced_accuracy_score(y[test], (p_test >= t).astype(int)))
               for name, t in thresholds.items()},
            **{f"{name}_threshold": float(t) for name, t in thresholds.items()}}


def one_repeat(x, y, seed: int) -> dict:
    """One pseudo split: the search once, then each tie-break's pick scored under each threshold rule.

    Keys without a prefix are the pick when validation-AUC ties go to the smallest C; ``hinge_*`` keys
    are the search's default pick (ties to the lowest validation hinge loss).
    """
    from sklearn.model_selection import train_test_split

    from mlproject.training.svm_training import SvmSettings, best_trial, search_svm

    rest, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=0.15 / 0.8, stratify=y[rest], random_state=seed)
    # scored on validation alone: the search these rules were studied with
    search = search_svm((x[train], y[train]), (x[val], y[val]), SvmSettings(seed=seed, search_data="val"))
    top = max(t.roc_auc for t in search.trials)
    smallest = best_trial(search.trials, tie_break="smallest_C")
    row = {"seed": seed, "C": smallest.C, "kernel": smallest.kernel,
           "tied_trials": sum(t.roc_auc >= top - 1e-9 for t in search.trials),
           **threshold_rules(x, y, train, val, test, smallest.C, smallest.kernel, seed)}
    hinge = best_trial(search.trials, tie_break="hinge")
    same = (hinge.C, hinge.kernel) == (smallest.C, smallest.kernel)
    scored = {k: v for k, v in row.items() if k.endswith(("_bacc", "_threshold", "_auc"))} if same else \
        threshold_rules(x, y, train, val, test, hinge.C, hinge.kernel, seed)
    return {**row, "hinge_C": hinge.C, "hinge_kernel": hinge.kernel, **{f"hinge_{k}": v for k, v in scored.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="dagm,casting_impeller,elpv_solar")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    report = {}
    for dataset in args.datasets.split(","):
        started = time.perf_counter()
        x, y = features_without_test(dataset, args.image_size)
        rows = [one_repeat(x, y, seed) for seed in range(args.repeats)]
        means = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key.endswith("_bacc")}
        report[dataset] = {"repeats": rows, "mean": means, "seconds": round(time.perf_counter() - started, 1)}
        print(dataset, json.dumps(means), flush=True)
    (OUT / "operating_point_cv.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
