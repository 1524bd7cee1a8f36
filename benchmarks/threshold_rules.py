"""Candidate operating-point rules, judged on models whose test scores nobody has looked at yet.

`threshold=auto` (the product's rule, ``best_balanced_threshold``) puts the threshold in the middle of
the widest gap between validation scores, in logit space. On a perfectly separated validation split
that middle ignores how the two classes spread: defects that are harder than the validation ones (the
border defects of DAGM class 1) can fall under it while every normal image stays far below.

The candidate, fixed here before the models it is judged on were scored (2026-11-25, before seed 3's
`finetune_trajectory.py` run ended):

``density_crossing``: fit a normal distribution to each class's validation logits and put the
threshold where the two fitted densities are equal, between the class means. Balanced accuracy
weighs the two classes equally, so under the fit this maximises the expected balanced accuracy
(its derivative in the threshold is proportional to f_normal(t) - f_defect(t)). A tight normal
class and a spread defect class pull the threshold towards the normals. If the fit has no
crossing between the means, or either class has fewer than 2 validation images, it falls back to
``threshold=auto``.

Input: the per-image score files ``finetune_trajectory.py --tta-views`` writes (``<out>.8-views.csv``:
image, split, label, p_mean, p_view0..7). Output: one line per file and rule.

Usage:
  python benchmarks/threshold_rules.py benchmarks/out/trajectory-views8-seed3.8-views.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # run as a script from a checkout

from bench_threshold import operating_point  # noqa: E402
from mlproject.evaluation.threshold import best_balanced_threshold, logit  # noqa: E402


def density_crossing_threshold(y_true, p_defect) -> float:
    """Where normal fits to each class's logits have equal density, between the class means."""
    y_true = np.asarray(y_true).astype(int)
    z = logit(p_defect)
    normal, defect = z[y_true == 0], z[y_true == 1]
    if len(normal) < 2 or len(defect) < 2:
        return best_balanced_threshold(y_true, p_defect)
    m0, s0, m1, s1 = normal.mean(), normal.std(ddof=1), defect.mean(), defect.std(ddof=1)
    if not (m0 < m1 and s0 > 0 and s1 > 0):
        return best_balanced_threshold(y_true, p_defect)
    # log N(t; m0, s0) = log N(t; m1, s1)  <=>  a t^2 + b t + c = 0
    a = 1 / (2 * s1**2) - 1 / (2 * s0**2)
    b = m0 / s0**2 - m1 / s1**2
    c = m1**2 / (2 * s1**2) - m0**2 / (2 * s0**2) + np.log(s1 / s0)
    roots = [-c / b] if abs(a) < 1e-12 else np.roots([a, b, c])
    between = [float(np.real(r)) for r in roots if abs(np.imag(r)) < 1e-12 and m0 < np.real(r) < m1]
    if not between:
        return best_balanced_threshold(y_true, p_defect)
    return float(1.0 / (1.0 + np.exp(-between[0])))


RULES = {"auto (product)": best_balanced_threshold, "density_crossing (candidate)": density_crossing_threshold}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores", nargs="+", help="<out>.8-views.csv files from finetune_trajectory.py --tta-views")
    parser.add_argument("--column", default="p_mean", help="score column: p_mean (8-view mean) or p_view0 (one view)")
    args = parser.parse_args()
    for path in args.scores:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        split = np.array([r["split"] for r in rows])
        y = np.array([r["label"] == "defect" for r in rows], dtype=int)
        p = np.array([float(r[args.column]) for r in rows])
        val, test = split == "val", split == "test"
        for name, rule in RULES.items():
            point = operating_point(y[test], p[test], rule(y[val], p[val]))
            print(f"{path} [{args.column}] {name}: threshold {point['threshold']:.4f}, test balanced accuracy "
                  f"{point['balanced_accuracy']:.3f}, defects missed {point['defects'] - point['defects_found']}, "
                  f"false alarms {point['false_alarms']}")


if __name__ == "__main__":
    main()
