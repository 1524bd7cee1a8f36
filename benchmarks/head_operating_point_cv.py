"""The head's operating point compared without the test split: validation alone vs validation + the
training split's out-of-fold scores, for the `frozen` head (the `finetune` warm-up's too).

`svm` sets `threshold=auto` on its validation scores pooled with out-of-fold training scores
(`operating_point_cv.py`); `frozen` and `finetune` still use validation alone, and on the suite split
their thresholds sat far above 0.5 on elpv (0.74 and 0.80) with ROC AUC at or above the baseline's but
balanced accuracy below it. This asks which rule calls held-out images best for a head.

As the other studies: per dataset the suite's split (`split_seed=0`) with its **test part dropped before
anything is computed**; frozen HED features (stats of block3-5, 224 px, sign-log as the head reads them);
`--repeats` stratified pseudo-train / pseudo-val / pseudo-test splits (0.65 / 0.15 / 0.2). The head is
trained by the entry point's own `fit_head` (early stopping on pseudo-val, best epoch kept); out-of-fold
scores come from `--folds` heads each trained on the other folds of pseudo-train (early stopping on
pseudo-val too). Rules, each scored by pseudo-test balanced accuracy:

* ``val``: `density_crossing_threshold` on pseudo-val (`threshold=auto` for heads today);
* ``pooled``: the same on pseudo-val + out-of-fold pseudo-train scores (what `svm` does);
* ``pooled_gap``: `best_balanced_threshold` on that pool;
* ``half``: 0.5, the point balanced class weights aim the sigmoid at.

Usage: python benchmarks/head_operating_point_cv.py [--datasets ...] [--repeats 5] [--heads fixed,linear]
Writes benchmarks/out/head_operating_point_cv.json; the table goes into benchmarks/RESULTS.md by hand.
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
from head_search_cv import head_scores  # noqa: E402  (beside this script)
from operating_point_cv import OUT, features_without_test  # noqa: E402
from provenance import git_commit  # noqa: E402
from suite import DATASETS, machine_description  # noqa: E402

SIZE = 224
#: (dense units, dropout); both at the default learning rate
HEADS = {"fixed": (256, 0.5), "linear": (0, 0.5)}
RULES = ("val", "pooled", "pooled_gap", "half")


def one_repeat(x, y, seed: int, heads: list[str], folds: int) -> dict:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, train_test_split

    from mlproject.evaluation.threshold import best_balanced_threshold, density_crossing_threshold
    from mlproject.training.head_search import DEFAULT_LR_HEAD, HeadChoice

    rest, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=0.15 / 0.8, stratify=y[rest], random_state=seed)
    row: dict = {"seed": seed}
    for name in heads:
        choice = HeadChoice(DEFAULT_LR_HEAD, HEADS[name][1], HEADS[name][0])
        scores, _ = head_scores(x, y, train, val, np.concatenate([val, test]), choice, seed)
        p_val, p_test = scores[: len(val)], scores[len(val):]
        oof = np.empty(len(train))
        for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(train, y[train]):
            oof[held], _ = head_scores(x, y, train[fit], val, train[held], choice, seed)
        y_pool, p_pool = np.concatenate([y[val], y[train]]), np.concatenate([p_val, oof])
        thresholds = {"val": density_crossing_threshold(y[val], p_val),
                      "pooled": density_crossing_threshold(y_pool, p_pool),
                      "pooled_gap": best_balanced_threshold(y_pool, p_pool), "half": 0.5}
        row[name] = {"test_auc": float(roc_auc_score(y[test], p_test)),
                     **{f"{rule}_threshold": float(t) for rule, t in thresholds.items()},
                     **{f"{rule}_bacc": float(balanced_accuracy_score(y[test], (p_test >= t).astype(int)))
                        for rule, t in thresholds.items()}}
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--heads", default="fixed,linear")
    parser.add_argument("--folds", type=int, default=3)
    args = parser.parse_args(argv)
    from mlproject.models.feature_transforms import signed_log1p

    heads = args.heads.split(",")
    results = {"command": "python benchmarks/head_operating_point_cv.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d"), "commit": git_commit(), "machine": machine_description(),
               "size": SIZE, "datasets": {}}
    out = OUT / "head_operating_point_cv.json"
    for dataset in args.datasets.split(","):
        x_raw, y = features_without_test(dataset, SIZE)
        x = np.asarray(signed_log1p(x_raw), dtype=np.float32)  # as the head reads them (log_features=true)
        rows = []
        for seed in range(args.repeats):
            rows.append(one_repeat(x, y, seed, heads, args.folds))
            print(dataset, json.dumps(rows[-1]), flush=True)
        means = {head: {key: float(np.mean([r[head][key] for r in rows])) for key in rows[0][head]} for head in heads}
        results["datasets"][dataset] = {"repeats": rows, "mean": means}
        OUT.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))  # after each dataset: a long run keeps what it did
    print("| dataset | head | AUC | " + " | ".join(RULES) + " |")
    for dataset, result in results["datasets"].items():
        for head, m in result["mean"].items():
            print(f"| {dataset} | {head} | {m['test_auc']:.4f} | " + " | ".join(f"{m[f'{r}_bacc']:.4f}" for r in RULES) + " |")


if __name__ == "__main__":
    main()
