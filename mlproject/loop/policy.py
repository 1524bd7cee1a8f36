"""The labelling policy of one round: what the machine labels itself and what people should look at.

Pure code, no I/O: class probabilities and backbone embeddings in, decisions out. The same
functions run inside ``alloop sync`` (against Label Studio) and ``alloop simulate`` (against an
oracle), so what is measured offline is what runs in production.

The seed's rule: cluster the embeddings; a task whose own confidence is at least ``tau`` and whose
cluster is confident (mean confidence and agreement with the cluster's majority class above their
thresholds) is labelled by the machine (self-training); the least confident of the rest go to
people (active learning), spread across clusters, up to a per-round budget.

Query strategies are plain functions of the probabilities (as in modAL): higher = more useful to
label. ``random`` is the baseline.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

# --- query strategies: probabilities (N x C) -> usefulness (N,), higher first ----------------------


def least_confidence(probabilities: np.ndarray) -> np.ndarray:
    """1 - max class probability."""
    return 1.0 - np.max(probabilities, axis=1)


def margin(probabilities: np.ndarray) -> np.ndarray:
    """1 - (top probability - second probability): a small margin is an uncertain task."""
    ordered = np.sort(probabilities, axis=1)
    second = ordered[:, -2] if ordered.shape[1] > 1 else np.zeros(len(ordered))
    return 1.0 - (ordered[:, -1] - second)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy of the class distribution, normalised to [0, 1]."""
    p = np.clip(probabilities, 1e-12, 1.0)
    values = -np.sum(p * np.log(p), axis=1)
    return values / math.log(probabilities.shape[1]) if probabilities.shape[1] > 1 else values


@dataclass(frozen=True)
class QueryContext:
    """What a strategy may use besides the probabilities: the tasks' clusters and a seed."""

    cluster_ids: np.ndarray | None = None
    cluster_confidence: Mapping[int, float] | None = None
    seed: int = 0


def least_confident_clusters_first(probabilities: np.ndarray, context: QueryContext) -> np.ndarray:
    """The seed's rule: tasks of the least confident clusters first, the least confident task of a
    cluster first within it."""
    if context.cluster_ids is None or context.cluster_confidence is None:
        raise ValueError("strategy 'cluster' needs cluster ids and cluster confidences")
    weak = np.array([1.0 - context.cluster_confidence[int(c)] for c in context.cluster_ids])
    return weak + 1e-3 * least_confidence(probabilities)


def random_order(probabilities: np.ndarray, context: QueryContext) -> np.ndarray:
    """The baseline: a seeded random order."""
    return np.random.default_rng(context.seed).random(len(probabilities))


#: Every query strategy by name: (probabilities, context) -> usefulness. New strategies go here.
QUERY_STRATEGIES = {
    "least_confidence": lambda probabilities, _context: least_confidence(probabilities),
    "margin": lambda probabilities, _context: margin(probabilities),
    "entropy": lambda probabilities, _context: entropy(probabilities),
    "cluster": least_confident_clusters_first,
    "random": random_order,
}
STRATEGIES = tuple(QUERY_STRATEGIES)


def usefulness(strategy: str, probabilities: np.ndarray, cluster_ids: np.ndarray | None = None,
               cluster_confidence: Mapping[int, float] | None = None, *, seed: int = 0) -> np.ndarray:
    """Score of each task for ``strategy``; ties are broken by the caller on task id."""
    if strategy not in QUERY_STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    return QUERY_STRATEGIES[strategy](probabilities, QueryContext(cluster_ids, cluster_confidence, seed))


# --- clusters -----------------------------------------------------------------------------------------


def default_n_clusters(n_tasks: int) -> int:
    """About sqrt(n / 2) clusters, at least 2 and at most 50 (and never more than the tasks)."""
    if n_tasks <= 1:
        return max(n_tasks, 1)
    return int(min(n_tasks, max(2, min(50, round(math.sqrt(n_tasks / 2))))))


def cluster_embeddings(embeddings: np.ndarray, n_clusters: int, *, seed: int = 0,
                       max_dims: int = 50) -> np.ndarray:
    """k-means cluster id per row. Rows are L2-normalised and reduced by PCA first.

    Deterministic for the same rows in the same order and the same seed.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (tasks x features), got shape {x.shape}")
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=int)
    k = int(max(1, min(n_clusters, n)))
    if k == 1:
        return np.zeros(n, dtype=int)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    dims = min(max_dims, x.shape[1], n)
    if dims < x.shape[1]:
        x = PCA(n_components=dims, random_state=seed, svd_solver="full").fit_transform(x)
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x).astype(int)


@dataclass(frozen=True)
class ClusterStats:
    cluster: int
    size: int
    majority_class: int
    confidence: float  # mean of the members' max class probability
    agreement: float  # share of members whose predicted class is the majority class


def cluster_statistics(probabilities: np.ndarray, cluster_ids: np.ndarray) -> dict[int, ClusterStats]:
    predicted = np.argmax(probabilities, axis=1)
    confidence = np.max(probabilities, axis=1)
    stats = {}
    for cluster in sorted(set(int(c) for c in cluster_ids)):
        members = cluster_ids == cluster
        counts = np.bincount(predicted[members], minlength=probabilities.shape[1])
        majority = int(np.argmax(counts))
        stats[cluster] = ClusterStats(cluster, int(members.sum()), majority, float(confidence[members].mean()),
                                      float(counts[majority] / members.sum()))
    return stats


# --- the round ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds, caps and budget of one round; the defaults are the seed's rule."""

    tau: float = 0.95
    class_tau: Mapping[str, float] = field(default_factory=dict)  # per-class override of tau
    cluster_confidence: float = 0.9
    cluster_agreement: float = 0.9
    n_clusters: int | None = None  # None: default_n_clusters(number of tasks)
    max_auto_per_class: int | Mapping[str, int] = 100
    auto_label: bool = True
    strategy: str = "margin"
    human_budget: int = 20
    diversity: bool = True
    diversity_pool: int = 3  # diversity picks among the budget x this most useful tasks
    seed: int = 0

    # Each message starts with the field's name, so a command can swap in the option that set it.
    def __post_init__(self):
        if self.strategy not in QUERY_STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        for name, value in [("tau", self.tau), ("cluster_confidence", self.cluster_confidence),
                            ("cluster_agreement", self.cluster_agreement),
                            *((f"class_tau {k}", v) for k, v in self.class_tau.items())]:
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.n_clusters is not None and self.n_clusters < 0:
            raise ValueError(f"n_clusters must be >= 0 (0: automatic), got {self.n_clusters}")
        caps = self.max_auto_per_class
        for class_name, cap in caps.items() if isinstance(caps, Mapping) else [("", caps)]:
            if cap < 0:
                raise ValueError(f"max_auto_per_class{f' {class_name}' if class_name else ''} must be >= 0, got {cap}")
        if self.human_budget < 0:
            raise ValueError(f"human_budget must be >= 0, got {self.human_budget}")
        if self.diversity_pool < 1:
            raise ValueError(f"diversity_pool must be >= 1, got {self.diversity_pool}")

    def check_class_names(self, class_names: Sequence[str]) -> None:
        """Refuse per-class settings for a class not in ``class_names``: its setting would never apply."""
        caps = self.max_auto_per_class if isinstance(self.max_auto_per_class, Mapping) else {}
        for name, settings in (("class_tau", self.class_tau), ("max_auto_per_class", caps)):
            for class_name, value in settings.items():
                if class_name not in class_names:
                    raise ValueError(f"{name} takes CLASS=VALUE pairs with CLASS one of {', '.join(class_names)}; "
                                     f"got {f'{class_name}={value}'!r}")

    def tau_for(self, class_name: str) -> float:
        return float(self.class_tau.get(class_name, self.tau))

    def cap_for(self, class_name: str) -> int:
        cap = self.max_auto_per_class
        return int(cap.get(class_name, 0) if isinstance(cap, Mapping) else cap)


@dataclass(frozen=True)
class AutoLabel:
    task_id: int
    label: str
    confidence: float
    cluster: int


@dataclass(frozen=True)
class ReviewItem:
    task_id: int
    rank: int  # 1 = most useful
    score: float
    cluster: int


@dataclass(frozen=True)
class RoundPlan:
    auto_labels: list[AutoLabel]
    review: list[ReviewItem]
    cluster_of: dict[int, int]  # task id -> cluster
    clusters: dict[int, ClusterStats]
    skipped_by_cap: dict[str, int]  # class -> confident tasks left out by the per-class cap

    def counts(self) -> dict[str, int]:
        by_class = Counter(a.label for a in self.auto_labels)
        return {"auto_labelled": len(self.auto_labels), "routed": len(self.review),
                **{f"auto_labelled.{k}": v for k, v in sorted(by_class.items())},
                **{f"capped.{k}": v for k, v in sorted(self.skipped_by_cap.items())}}


def plan_round(task_ids: Sequence[int], probabilities: np.ndarray, embeddings: np.ndarray,
               class_names: Sequence[str], config: PolicyConfig, *,
               human_labelled: Sequence[bool] | None = None, machine_labelled: Sequence[bool] | None = None,
               needs_review: Sequence[bool] | None = None,
               auto_already: Mapping[str, int] | None = None) -> RoundPlan:
    """Decide one round.

    ``task_ids``: the tasks (unique ints); ``probabilities``: N x C class probabilities in the order of
    ``class_names``; ``embeddings``: N x D backbone features. Flags per task:
    ``human_labelled`` (a person annotated it: never auto-labelled, never routed again),
    ``machine_labelled`` (already auto-labelled: not again, not routed),
    ``needs_review`` (must go to a person, e.g. a revoked auto-label: never auto-labelled).
    ``auto_already``: auto-labels per class made earlier in this same round (a resumed round), which
    count against the caps. Input order does not matter: tasks are sorted by id first.
    """
    ids = np.asarray(task_ids, dtype=np.int64)
    n = len(ids)
    if len(set(ids.tolist())) != n:
        raise ValueError("task ids must be unique")
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(n, -1) if n else \
        np.zeros((0, len(class_names)))
    if probabilities.shape[1] != len(class_names):
        raise ValueError(f"probabilities have {probabilities.shape[1]} columns but there are "
                         f"{len(class_names)} class names")
    embeddings = np.asarray(embeddings, dtype=np.float64).reshape(n, -1) if n else np.zeros((0, 1))

    def flags(values):
        return np.zeros(n, dtype=bool) if values is None else np.asarray(values, dtype=bool).reshape(n)

    human, machine, review_only = flags(human_labelled), flags(machine_labelled), flags(needs_review)
    order = np.argsort(ids, kind="stable")
    ids, probabilities, embeddings = ids[order], probabilities[order], embeddings[order]
    human, machine, review_only = human[order], machine[order], review_only[order]

    k = config.n_clusters or default_n_clusters(n)
    cluster_ids = cluster_embeddings(embeddings, k, seed=config.seed) if n else np.zeros(0, dtype=int)
    clusters = cluster_statistics(probabilities, cluster_ids) if n else {}
    predicted = np.argmax(probabilities, axis=1) if n else np.zeros(0, dtype=int)
    confidence = np.max(probabilities, axis=1) if n else np.zeros(0)
    open_task = ~human & ~machine

    auto_labels: list[AutoLabel] = []
    skipped: dict[str, int] = {}
    if config.auto_label and n:
        candidates = []
        for i in np.flatnonzero(open_task & ~review_only):
            stats = clusters[int(cluster_ids[i])]
            name = class_names[int(predicted[i])]
            if (confidence[i] >= config.tau_for(name) and stats.majority_class == predicted[i]
                    and stats.confidence >= config.cluster_confidence
                    and stats.agreement >= config.cluster_agreement):
                candidates.append(i)
        # Most confident first, so a cap keeps the surest ones.
        candidates.sort(key=lambda i: (-confidence[i], ids[i]))
        taken = Counter({str(k): int(v) for k, v in (auto_already or {}).items()})
        for i in candidates:
            name = class_names[int(predicted[i])]
            if taken[name] >= config.cap_for(name):
                skipped[name] = skipped.get(name, 0) + 1
                continue
            taken[name] += 1
            auto_labels.append(AutoLabel(int(ids[i]), name, float(confidence[i]), int(cluster_ids[i])))

    auto_ids = {a.task_id for a in auto_labels}
    routable = [i for i in np.flatnonzero(open_task) if int(ids[i]) not in auto_ids]
    review = _rank_for_review(routable, ids, probabilities, cluster_ids, clusters, review_only, config)
    return RoundPlan(auto_labels=auto_labels, review=review,
                     cluster_of={int(t): int(c) for t, c in zip(ids, cluster_ids)},
                     clusters=clusters, skipped_by_cap=skipped)


def _rank_for_review(candidates: list[int], ids, probabilities, cluster_ids, clusters, review_only,
                     config: PolicyConfig) -> list[ReviewItem]:
    if not candidates or config.human_budget == 0:
        return []
    idx = np.asarray(candidates)
    confidences = {c: s.confidence for c, s in clusters.items()}
    scores = usefulness(config.strategy, probabilities[idx], cluster_ids[idx], confidences, seed=config.seed)
    # Tasks that must be reviewed (revoked auto-labels) come before everything else.
    keys = sorted(range(len(idx)), key=lambda j: (not review_only[idx[j]], -scores[j], ids[idx[j]]))
    ordered = [(int(idx[j]), float(scores[j])) for j in keys]
    forced = [item for item in ordered if review_only[item[0]]]
    rest = [item for item in ordered if not review_only[item[0]]]
    budget = config.human_budget
    if config.diversity and config.strategy != "random":
        rest = _spread_across_clusters(rest[: budget * config.diversity_pool], cluster_ids)
    chosen = (forced + rest)[:budget]
    return [ReviewItem(int(ids[i]), rank, score, int(cluster_ids[i])) for rank, (i, score) in enumerate(chosen, 1)]


def _spread_across_clusters(ordered: list[tuple[int, float]], cluster_ids) -> list[tuple[int, float]]:
    """Round-robin over clusters, each in its own usefulness order; a cluster's turn comes by its best task."""
    queues: dict[int, list] = {}
    for item in ordered:
        queues.setdefault(int(cluster_ids[item[0]]), []).append(item)
    result = []
    while queues:
        for cluster in list(queues):  # dict order = order of each cluster's most useful task
            result.append(queues[cluster].pop(0))
            if not queues[cluster]:
                del queues[cluster]
    return result


def probabilities_from_p_defect(p_defect: Sequence[float], class_names: Sequence[str]) -> np.ndarray:
    """Binary models give P(positive); the policy wants one column per class (negative, positive)."""
    p = np.clip(np.asarray(p_defect, dtype=np.float64), 0.0, 1.0)
    if len(class_names) != 2:
        raise ValueError(f"binary P(defect) needs exactly two class names, got {list(class_names)}")
    return np.stack([1.0 - p, p], axis=1)


# --- audits ---------------------------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (sound for small samples and for 0% or 100%)."""
    if trials <= 0:
        return 0.0, 1.0
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class AuditVerdict:
    audited: int
    correct: int
    precision: float
    low: float
    high: float
    target: float
    below_target: bool  # even the interval's upper end is below the target: act
    new_tau: float | None  # the raised threshold when below target


def judge_audit(correct: int, audited: int, *, target: float, tau: float, confidence: float = 0.95) -> AuditVerdict:
    """Auto-label precision from an audit; below the target (with confidence) tau moves halfway to 1."""
    low, high = wilson_interval(correct, audited, confidence)
    precision = correct / audited if audited else math.nan
    below = audited > 0 and high < target
    new_tau = min(0.999, tau + (1.0 - tau) / 2) if below else None
    return AuditVerdict(audited, correct, precision, low, high, target, below, new_tau)
