"""The operating-threshold rule on registered models: the rule before 2026-11-25 vs the current one.

`threshold=auto` picks the operating point on the validation split. Until 2026-11-25, ties among
equally good thresholds went to the one closest to 0.5; now they go to the widest gap in logit
space (`mlproject.evaluation.threshold.best_balanced_threshold`). This script re-scores registered
versions on the validation and test images of the split their run logged (through the registered
pyfunc, PNG bytes in, as served), and reports each rule judged on validation alone (leave one
validation image out, pick the threshold on the rest, call that image) and on the test split. It
first checks that the run's own operating threshold reproduces the test balanced accuracy it logged.

Usage: MLFLOW_TRACKING_URI=sqlite:///$PWD/benchmarks/out/mlflow.db \\
       python benchmarks/bench_threshold.py --models bench-finetune-augmented/1,bench-speed512-cache-true/1
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout


def closest_to_half_threshold(y_true, p_defect) -> float:
    """The rule until 2026-11-25 (kept here as the baseline): best balanced accuracy over the
    midpoints between adjacent distinct scores and 0.5; ties go to the candidate closest to 0.5."""
    from sklearn.metrics import balanced_accuracy_score

    y_true, p = np.asarray(y_true).astype(int), np.asarray(p_defect, dtype=float)
    if len(np.unique(y_true)) < 2:
        return 0.5
    scores = np.unique(p)
    candidates = np.concatenate([[0.5], (scores[:-1] + scores[1:]) / 2 if len(scores) > 1 else []])
    best, best_score = 0.5, -1.0
    for candidate in candidates:
        score = balanced_accuracy_score(y_true, (p >= candidate).astype(int))
        if score > best_score + 1e-12 or (abs(score - best_score) <= 1e-12 and abs(candidate - 0.5) < abs(best - 0.5)):
            best, best_score = float(candidate), score
    return best


def operating_point(y, p, threshold: float) -> dict:
    from sklearn.metrics import balanced_accuracy_score

    called = p >= threshold
    return {"threshold": threshold, "balanced_accuracy": float(balanced_accuracy_score(y, called.astype(int))),
            "defects_found": int((called & (y == 1)).sum()), "defects": int((y == 1).sum()),
            "false_alarms": int((called & (y == 0)).sum()), "normals": int((y == 0).sum())}


def leave_one_out(rule, y, p) -> dict:
    """The rule judged on validation alone: each image called at the threshold the rule picks from
    the other validation images. Lets rules be compared without looking at the test split."""
    from sklearn.metrics import balanced_accuracy_score

    keep = np.ones(len(y), dtype=bool)
    called = np.zeros(len(y), dtype=int)
    for i in range(len(y)):
        keep[i] = False
        called[i] = int(p[i] >= rule(y[keep], p[keep]))
        keep[i] = True
    return {"balanced_accuracy": float(balanced_accuracy_score(y, called)),
            "errors": int((called != y).sum())}


def score_split(model, rows: list[dict], batch: int = 16) -> np.ndarray:
    import pandas as pd
    from tqdm import tqdm

    p = []
    for start in tqdm(range(0, len(rows), batch), desc="scoring", unit="batch"):
        frame = pd.DataFrame({"image": [Path(r["image"]).read_bytes() for r in rows[start:start + batch]]})
        p.extend(model.predict(frame)["p_defect"].astype(float))
    return np.asarray(p)


def load_registered(name: str, version: str):
    """A registered version's run, its loaded pyfunc and the rows of the split its run logged."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(client.get_model_version(name, version).run_id)
    with open(client.download_artifacts(run.info.run_id, "data/split.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    return run, mlflow.pyfunc.load_model(f"models:/{name}/{version}"), rows


def study(name: str, version: str) -> dict:
    from mlproject.evaluation.threshold import best_balanced_threshold

    run, model, rows = load_registered(name, version)
    positive = run.data.params["class_names"].split(",")[1]
    scored = {}
    for split in ("val", "test"):
        part = [r for r in rows if r["split"] == split]
        scored[split] = (np.array([int(r["label"] == positive) for r in part]), score_split(model, part))
    (y_val, p_val), (y_test, p_test) = scored["val"], scored["test"]
    logged = operating_point(y_test, p_test, run.data.metrics["operating_threshold"])
    if abs(logged["balanced_accuracy"] - run.data.metrics["test_balanced_accuracy"]) > 1e-6:
        raise SystemExit(f"{name}/{version}: re-scored test balanced accuracy {logged['balanced_accuracy']:.4f} "
                         f"differs from the run's {run.data.metrics['test_balanced_accuracy']:.4f}")
    rules = {"closest_to_half": closest_to_half_threshold, "widest_logit_gap": best_balanced_threshold}
    return {
        "model": f"{name}/{version}", "run_id": run.info.run_id,
        "val_leave_one_out": {rule: leave_one_out(fn, y_val, p_val) for rule, fn in rules.items()},
        "val": {"normal_max": float(p_val[y_val == 0].max()), "defect_min": float(p_val[y_val == 1].min()),
                "errors_at_logged_threshold": int(((p_val >= logged["threshold"]) != (y_val == 1)).sum())},
        "test_ranking": {"normal_max": float(p_test[y_test == 0].max()), "defect_min": float(p_test[y_test == 1].min())},
        "logged": logged,
        **{rule: operating_point(y_test, p_test, fn(y_val, p_val)) for rule, fn in rules.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", required=True, help="comma-separated NAME/VERSION")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "threshold.json"))
    args = parser.parse_args()
    results = [study(*spec.split("/")) for spec in args.models.split(",")]
    Path(args.out).write_text(json.dumps(results, indent=2))
    print("| model | val: max normal / min defect | rule | val leave-one-out bal. acc (errors) | threshold "
          "| test balanced accuracy | defects found | false alarms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for rule in ("closest_to_half", "widest_logit_gap"):
            point = r[rule]
            loo = r["val_leave_one_out"][rule]
            print(f"| {r['model']} | {r['val']['normal_max']:.4f} / {r['val']['defect_min']:.4f} | {rule} | "
                  f"{loo['balanced_accuracy']:.3f} ({loo['errors']}) | {point['threshold']:.4f} | {point['balanced_accuracy']:.3f} | "
                  f"{point['defects_found']}/{point['defects']} | {point['false_alarms']}/{point['normals']} |")


if __name__ == "__main__":
    main()
