"""The `frozen` head: the fixed default (1e-3, dropout 0.5, 256 units) against the searched one
(``lr_head=dropout=dense_units=auto``, candidates scored on the validation split or cross-validated over
train + validation: ``--search-data``), compared without the test split.

As in ``svm_search_data_cv.py``: per dataset, the suite's split (`split_seed=0`) with its **test part
dropped before anything is computed**; frozen HED features (stats of block3-5, 224 px or ``--size``, sign-log as the
head reads them) of the rest; then, `--repeats` times, a stratified pseudo-train / pseudo-val /
pseudo-test split (0.65 / 0.15 / 0.2). Each head is trained as the entry point trains it
(:func:`~mlproject.training.head_training.fit_head`: standardised inputs, balanced class weights, early
stopping on pseudo-val, the best epoch kept), its operating point set on pseudo-val (``threshold=auto``)
and scored on pseudo-test. The search sees pseudo-train and pseudo-val only. For reference, the suite's
baseline (balanced logistic regression, threshold 0.5) fitted on pseudo-train.

Usage: python benchmarks/head_search_cv.py [--datasets dagm,casting_impeller,elpv_solar,neu_steel-inclusion]
       [--repeats 3] [--budget-s 60] [--size 224]
Writes benchmarks/out/head_search_cv.json; the table goes into benchmarks/RESULTS.md by hand.
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
from operating_point_cv import OUT, features_without_test  # noqa: E402  (beside this script)
from provenance import git_commit  # noqa: E402
from suite import DATASETS, baseline_model, baseline_view, machine_description  # noqa: E402
from svm_search_data_cv import STATS_WIDTHS  # noqa: E402

SIZE = 224  # the other studies' size; --size for the suite's own (auto: 512 on DAGM)


def head_scores(x, y, fit_rows, val_rows, score_rows, choice, seed: int) -> tuple[np.ndarray, int]:
    """P(defect) of ``score_rows`` from a head with ``choice``'s settings, trained as the entry point
    trains it on ``fit_rows`` with early stopping on ``val_rows``; and its epochs."""
    import keras

    from mlproject.models.variants import build_head
    from mlproject.training.head_training import HeadTrainingConfig, fit_head

    keras.utils.set_random_seed(seed)
    head = build_head(x.shape[1], dense_units=choice.dense_units, dropout=choice.dropout)
    config = HeadTrainingConfig(lr_head=choice.lr_head, finetune_epochs=0, seed=seed)
    epochs = fit_head(head, [x[fit_rows]], y[fit_rows], x[val_rows], y[val_rows], config, history={}, verbose=0)
    return np.asarray(head.predict(x[score_rows], batch_size=256, verbose=0))[:, 0], epochs


def scored_head(x, y, train, val, test, choice, seed: int) -> dict:
    """A head with ``choice``'s settings, trained as the entry point does, scored on pseudo-test."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from mlproject.evaluation.threshold import resolve_threshold

    scores, epochs = head_scores(x, y, train, val, np.concatenate([val, test]), choice, seed)
    p_val, p_test = scores[: len(val)], scores[len(val):]
    threshold = resolve_threshold("auto", y[val], p_val)
    return {"test_auc": float(roc_auc_score(y[test], p_test)),
            "test_bacc": float(balanced_accuracy_score(y[test], (p_test >= threshold).astype(int))),
            "epochs": epochs, "lr_head": choice.lr_head, "dropout": choice.dropout, "dense_units": choice.dense_units}


def one_repeat(x, x_raw, y, seed: int, budget_s: float, trials: int, search_data: list[str]) -> dict:
    """``x``: what the head reads (sign-log stats); ``x_raw``: the stats, which the baseline views its own way."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    from mlproject.training.head_search import AUTO, HeadSearchSettings, search_head
    from mlproject.training.head_training import HeadTrainingConfig

    rest, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=0.15 / 0.8, stratify=y[rest], random_state=seed)
    row: dict = {"seed": seed}
    fixed = HeadSearchSettings(seed=seed)
    row["fixed"] = scored_head(x, y, train, val, test, fixed.given_or_default(), seed)
    for choice in search_data:
        started = time.perf_counter()
        settings = HeadSearchSettings(lr_head=AUTO, dropout=AUTO, dense_units=AUTO, search_trials=trials,
                                      search_budget_s=budget_s, search_data=choice, seed=seed)
        search = search_head([x[train]], y[train], x[val], y[val], settings,
                             HeadTrainingConfig(finetune_epochs=0, seed=seed))
        row[f"searched_{choice}"] = {**scored_head(x, y, train, val, test, search.choice, seed),
                                     "search_s": round(time.perf_counter() - started, 1), "trials": len(search.trials),
                                     "search_data_used": search.search_data}
    model = baseline_model().fit(baseline_view(x_raw[train], STATS_WIDTHS), y[train])
    p = model.predict_proba(baseline_view(x_raw[test], STATS_WIDTHS))[:, 1]
    row["baseline"] = {"test_auc": float(roc_auc_score(y[test], p)),
                       "test_bacc": float(balanced_accuracy_score(y[test], (p >= 0.5).astype(int)))}
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--search-data", default="val,train+val_cv", help="comma-separated: what the search scores on")
    parser.add_argument("--size", type=int, default=SIZE, help="image size of the features (cached per size)")
    parser.add_argument("--out", default="head_search_cv.json", help="file name under benchmarks/out")
    args = parser.parse_args(argv)
    from mlproject.models.feature_transforms import signed_log1p

    results = {"command": "python benchmarks/head_search_cv.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d"), "commit": git_commit(), "machine": machine_description(),
               "size": args.size, "datasets": {}}
    for dataset in args.datasets.split(","):
        x_raw, y = features_without_test(dataset, args.size)
        # the head reads the sign-log of the stats (log_features=true); the baseline takes its own view
        x = np.asarray(signed_log1p(x_raw), dtype=np.float32)
        rows = []
        for seed in range(args.repeats):
            row = one_repeat(x, x_raw, y, seed, args.budget_s, args.trials, args.search_data.split(","))
            rows.append(row)
            print(dataset, json.dumps(row), flush=True)
        names = ["fixed", *(f"searched_{c}" for c in args.search_data.split(",")), "baseline"]
        means = {name: {k: float(np.mean([r[name][k] for r in rows])) for k in ("test_auc", "test_bacc")}
                 for name in names}
        results["datasets"][dataset] = {"repeats": rows, "mean": means}
        print(dataset, "mean", json.dumps(means), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / args.out).write_text(json.dumps(results, indent=2))
    print("| dataset | " + " | ".join(f"{n} bacc / AUC" for n in names) + " |")
    for dataset, result in results["datasets"].items():
        m = result["mean"]
        print(f"| {dataset} | " + " | ".join(f"{m[n]['test_bacc']:.4f} / {m[n]['test_auc']:.4f}" for n in names) + " |")


if __name__ == "__main__":
    main()
