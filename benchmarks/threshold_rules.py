"""Operating-point rules, judged on models whose test scores nobody had looked at yet.

Until 2026-11-30 `threshold=auto` (``best_balanced_threshold``, now "widest_gap") put the threshold
in the middle of the widest gap between validation scores, in logit space. On a perfectly separated
validation split that middle ignores how the two classes spread: defects that are harder than the
validation ones (the border defects of DAGM class 1) can fall under it while every normal image
stays far below.

``density_crossing`` (``mlproject.evaluation.threshold.density_crossing_threshold``) was fixed here
as a candidate on 2026-11-25, before seed 3's scores existed: fit a normal distribution to each
class's validation logits and put the threshold where the two fitted densities are equal, between
the class means. It replaced the widest gap as `threshold=auto` on 2026-11-30, by the reading
committed before seeds 4 and 5 were trained (benchmarks/history/2026-11-notebook.md). This script still scores both.

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
from mlproject.evaluation.threshold import best_balanced_threshold, density_crossing_threshold  # noqa: E402


# the product's `threshold=auto` until 2026-11-30, and the rule that replaced it
RULES = {"widest_gap (auto until 2026-11-30)": best_balanced_threshold,
         "density_crossing (auto since)": density_crossing_threshold}


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
