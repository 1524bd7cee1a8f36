"""The labels-to-target table for benchmarks/RESULTS.md from an `alloop simulate` output folder.

Reads ``curves.csv`` and ``summary.csv`` (written by ``alloop simulate --out DIR``; the benchmark run is
``benchmarks/bench_simulate.sh``) and prints, per strategy and auto-label mode, the human labels needed
to reach 99% of the full-label accuracy, the ratio against random, the share of the pool, the
auto-label precision over the whole replay and over the auto-labels made before the target was
reached, and the defects people had found by then; then whether each target is met.

Usage: python benchmarks/bench_simulate.py [benchmarks/out/simulate]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

TARGET_RATIO, TARGET_PRECISION, TARGET_SHARE = 0.5, 0.995, 0.10


def fmt(value, spec):
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def before_target(curves: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per curve: the row of the first round at or above ``target`` (auto-labels and defects found by then)."""
    rows = []
    for _, curve in curves.groupby(["strategy", "auto_labels", "seed"], sort=False):
        curve = curve.sort_values("round")
        reached = curve[curve["balanced_accuracy"] >= target]
        if len(reached):
            rows.append(reached.iloc[0])
    return pd.DataFrame(rows)


def main(folder: str = "benchmarks/out/simulate") -> None:
    folder = Path(folder)
    curves = pd.read_csv(folder / "curves.csv")
    summary = pd.read_csv(folder / "summary.csv")
    header = (folder / "summary.txt").read_text().splitlines()[0]
    target = float(header.split("target (99%) ")[1].split(";")[0])
    at_target = before_target(curves, target)
    print(header, "\n")
    print("| strategy | auto-labels | human labels to target (mean; per seed) | ratio vs random (same mode) "
          "| share of pool | auto-labels: made, precision (whole replay) | auto-labels before target: made, "
          "precision | defects found by people at target |")
    print("|---|---|---|---|---|---|---|---|")
    for row in summary.itertuples():
        mode = "with" if row.auto_labels else "without"
        here = at_target[(at_target.strategy == row.strategy) & (at_target.auto_labels == row.auto_labels)] \
            if len(at_target) else at_target
        made_before = int(here["n_auto"].sum()) if len(here) else 0
        correct_before = int(here["auto_correct"].sum()) if len(here) else 0
        defects = " ".join(str(int(v)) for v in here["n_human_positive"]) if len(here) else "—"
        whole = (f"{int(row.auto_labels_made)}, {fmt(row.auto_label_precision, '.2%')}" if row.auto_labels else "—")
        early = (f"{made_before}, {fmt(correct_before / made_before if made_before else math.nan, '.2%')}"
                 if row.auto_labels else "—")
        print(f"| {row.strategy} | {mode} | {fmt(row.labels_to_target, '.1f')} ({row.labels_to_target_per_seed}) "
              f"| {fmt(row.ratio_to_random, '.2f')} | {fmt(row.share_of_pool, '.1%')} | {whole} | {early} | {defects} |")
    best = summary[summary.strategy != "random"].sort_values("labels_to_target").iloc[0]
    print(f"\nbest non-random: {best.strategy} ({'with' if best.auto_labels else 'without'} auto-labels): "
          f"share {best.share_of_pool:.1%} (target <= {TARGET_SHARE:.0%}: "
          f"{'met' if best.share_of_pool <= TARGET_SHARE else 'missed'}), ratio {best.ratio_to_random:.2f} "
          f"(target <= {TARGET_RATIO}: {'met' if best.ratio_to_random <= TARGET_RATIO else 'missed'})")
    for row in summary[summary.auto_labels].itertuples():
        print(f"auto-label precision {row.strategy}: {fmt(row.auto_label_precision, '.2%')} "
              f"(target >= {TARGET_PRECISION:.1%}: {'met' if row.auto_label_precision >= TARGET_PRECISION else 'missed'})")


if __name__ == "__main__":
    main(*sys.argv[1:])
