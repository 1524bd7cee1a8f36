"""Pictures of a round: where the open tasks lie, which clusters the machine labelled, what went to people."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: rounds run on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_round_clusters(embeddings: np.ndarray, task_ids, plan, path, *, title: str = "") -> Path:
    """The open tasks' embeddings in 2-D (PCA), coloured by cluster; auto-labels and the review queue marked.

    ``embeddings`` rows belong to ``task_ids`` (in that order); ``plan`` is the round's RoundPlan.
    """
    from sklearn.decomposition import PCA

    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    xy = PCA(n_components=2, random_state=0).fit_transform(x) if x.shape[1] >= 2 else np.c_[x, np.zeros(len(x))]
    ids = [int(t) for t in task_ids]
    clusters = np.array([plan.cluster_of[t] for t in ids])
    auto = {a.task_id: a.label for a in plan.auto_labels}
    review = {r.task_id for r in plan.review}

    fig, ax = plt.subplots(figsize=(7.5, 6))
    scatter = ax.scatter(xy[:, 0], xy[:, 1], c=clusters, cmap="tab20", s=14, alpha=0.55, linewidths=0)
    for label, marker in zip(sorted(set(auto.values())), ("o", "s", "^", "D")):
        rows = [i for i, t in enumerate(ids) if auto.get(t) == label]
        ax.scatter(xy[rows, 0], xy[rows, 1], facecolors="none", edgecolors="black", marker=marker, s=40,
                   linewidths=0.8, label=f"auto-labelled {label} ({len(rows)})")
    rows = [i for i, t in enumerate(ids) if t in review]
    ax.scatter(xy[rows, 0], xy[rows, 1], color="red", marker="x", s=50, linewidths=1.5,
               label=f"to review ({len(rows)})")
    for cluster, stats in plan.clusters.items():
        members = clusters == cluster
        if members.any():
            cx, cy = xy[members].mean(axis=0)
            ax.annotate(f"{cluster}: {stats.confidence:.2f}", (cx, cy), fontsize=7, ha="center",
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7, "lw": 0})
    ax.set(xlabel="PC 1", ylabel="PC 2",
           title=(f"{title}: " if title else "") + f"{len(ids)} open tasks, {len(plan.clusters)} clusters "
                 "(label: cluster: mean confidence)")
    ax.legend(fontsize=8, loc="best")
    fig.colorbar(scatter, ax=ax, label="cluster")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
