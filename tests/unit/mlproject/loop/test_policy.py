"""The round policy: auto-label rule, caps, budget, ranking, determinism (unit + property tests)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlproject.loop.policy import (
    QUERY_STRATEGIES,
    STRATEGIES,
    PolicyConfig,
    cluster_embeddings,
    cluster_statistics,
    default_n_clusters,
    entropy,
    least_confidence,
    margin,
    plan_round,
    probabilities_from_p_defect,
)

CLASSES = ("ok", "defect")


def two_blobs(n_per_blob=20, seed=0):
    """Two well separated embedding blobs; blob 0 confidently ok, blob 1 confidently defect."""
    rng = np.random.default_rng(seed)
    emb = np.concatenate([rng.normal(0, 0.1, (n_per_blob, 8)) + 5, rng.normal(0, 0.1, (n_per_blob, 8)) - 5])
    p = np.concatenate([np.full(n_per_blob, 0.01), np.full(n_per_blob, 0.99)])
    return list(range(2 * n_per_blob)), probabilities_from_p_defect(p, CLASSES), emb


def test_query_strategies_rank_the_uncertain_first():
    probs = probabilities_from_p_defect([0.5, 0.9, 0.99, 0.3], CLASSES)
    for strategy in (least_confidence, margin, entropy):
        scores = strategy(probs)
        assert list(np.argsort(-scores)) == [0, 3, 1, 2], strategy.__name__
    assert entropy(probs)[0] == pytest.approx(1.0)
    assert margin(probs)[0] == pytest.approx(1.0) and margin(probs)[2] == pytest.approx(0.02)


def test_a_strategy_added_to_the_table_is_what_the_round_ranks_by(monkeypatch):
    # one table names every strategy: adding a function there is all a new strategy needs
    monkeypatch.setitem(QUERY_STRATEGIES, "lowest_id_last", lambda probabilities, context: np.arange(len(probabilities)))
    ids, probs, emb = two_blobs(n_per_blob=5)
    unsure = probabilities_from_p_defect(np.full(10, 0.5), CLASSES)
    plan = plan_round(ids, unsure, emb, CLASSES,
                      PolicyConfig(n_clusters=2, human_budget=3, diversity=False, strategy="lowest_id_last"))
    assert [r.task_id for r in plan.review] == [9, 8, 7]
    with pytest.raises(ValueError, match="strategy must be one of"):
        PolicyConfig(strategy="no_such_strategy")


def test_confident_clusters_are_auto_labelled_and_nothing_is_routed_when_all_are_sure():
    ids, probs, emb = two_blobs()
    plan = plan_round(ids, probs, emb, CLASSES, PolicyConfig(n_clusters=2, human_budget=5))
    assert {a.task_id for a in plan.auto_labels} == set(ids)
    assert {a.label for a in plan.auto_labels if a.task_id < 20} == {"ok"}
    assert {a.label for a in plan.auto_labels if a.task_id >= 20} == {"defect"}
    assert plan.review == []  # every open task was auto-labelled


def test_a_confident_task_in_an_unsure_cluster_goes_to_people():
    ids, probs, emb = two_blobs()
    p = probs[:, 1].copy()
    p[20:30] = 0.5  # half of the defect blob is unsure: the cluster's confidence drops
    plan = plan_round(ids, probabilities_from_p_defect(p, CLASSES), emb, CLASSES,
                      PolicyConfig(n_clusters=2, human_budget=30, diversity=False))
    auto = {a.task_id for a in plan.auto_labels}
    assert auto == set(range(20))  # only the sure ok cluster
    routed = [r.task_id for r in plan.review]
    assert routed[:10] == list(range(20, 30))  # the unsure ones first
    assert set(routed) == set(range(20, 40))
    assert [r.rank for r in plan.review] == list(range(1, 21))


def test_per_class_thresholds_and_caps():
    ids, probs, emb = two_blobs()
    strict = PolicyConfig(n_clusters=2, class_tau={"defect": 0.999})
    assert {a.label for a in plan_round(ids, probs, emb, CLASSES, strict).auto_labels} == {"ok"}
    capped = plan_round(ids, probs, emb, CLASSES, PolicyConfig(n_clusters=2, max_auto_per_class={"ok": 3, "defect": 5}))
    by_class = {c: sum(a.label == c for a in capped.auto_labels) for c in CLASSES}
    assert by_class == {"ok": 3, "defect": 5}
    assert capped.skipped_by_cap == {"ok": 17, "defect": 15}
    resumed = plan_round(ids, probs, emb, CLASSES, PolicyConfig(n_clusters=2, max_auto_per_class=4),
                         auto_already={"ok": 4, "defect": 1})
    assert sum(a.label == "ok" for a in resumed.auto_labels) == 0
    assert sum(a.label == "defect" for a in resumed.auto_labels) == 3


def test_review_is_spread_across_clusters():
    rng = np.random.default_rng(3)
    centres = [np.eye(6)[i] * 10 for i in range(3)]
    emb = np.concatenate([rng.normal(0, 0.05, (10, 6)) + c for c in centres])
    # cluster 0 is the least sure, yet the top of the queue visits every cluster
    p = np.concatenate([np.linspace(0.45, 0.5, 10), np.linspace(0.3, 0.35, 10), np.linspace(0.2, 0.25, 10)])
    probs = probabilities_from_p_defect(p, CLASSES)
    config = PolicyConfig(n_clusters=3, human_budget=6, auto_label=False, diversity_pool=5)
    plan = plan_round(list(range(30)), probs, emb, CLASSES, config)
    first_three = {plan.cluster_of[r.task_id] for r in plan.review[:3]}
    assert len(first_three) == 3
    no_diversity = plan_round(list(range(30)), probs, emb, CLASSES,
                              PolicyConfig(n_clusters=3, human_budget=6, auto_label=False, diversity=False))
    assert {no_diversity.cluster_of[r.task_id] for r in no_diversity.review} == {plan.cluster_of[9]}


def test_needs_review_tasks_come_first_and_are_never_auto_labelled():
    ids, probs, emb = two_blobs()
    forced = np.zeros(40, dtype=bool)
    forced[[3, 25]] = True
    plan = plan_round(ids, probs, emb, CLASSES, PolicyConfig(n_clusters=2, human_budget=4), needs_review=forced)
    assert [r.task_id for r in plan.review[:2]] == [3, 25]
    assert not {3, 25} & {a.task_id for a in plan.auto_labels}


def test_cluster_statistics_and_default_k():
    probs = probabilities_from_p_defect([0.1, 0.2, 0.9, 0.95], CLASSES)
    stats = cluster_statistics(probs, np.array([0, 0, 0, 1]))
    assert stats[0].size == 3 and stats[0].majority_class == 0
    assert stats[0].agreement == pytest.approx(2 / 3)
    assert stats[0].confidence == pytest.approx((0.9 + 0.8 + 0.9) / 3)
    assert [default_n_clusters(n) for n in (0, 1, 2, 10, 200, 100000)] == [1, 1, 2, 2, 10, 50]
    assert len(set(cluster_embeddings(np.random.default_rng(0).normal(size=(30, 5)), 4))) == 4


def test_bad_inputs_are_refused_with_the_field_named():
    ids, probs, emb = two_blobs(3)
    with pytest.raises(ValueError, match="unique"):
        plan_round([1, 1, 2, 3, 4, 5], probs, emb, CLASSES, PolicyConfig())
    with pytest.raises(ValueError, match="class names"):
        plan_round(ids, probs, emb, ("a", "b", "c"), PolicyConfig())
    with pytest.raises(ValueError, match="strategy"):
        PolicyConfig(strategy="smart")
    with pytest.raises(ValueError, match="tau"):
        PolicyConfig(tau=1.5)


# --- properties ----------------------------------------------------------------------------------


@st.composite
def rounds(draw):
    n = draw(st.integers(min_value=1, max_value=40))
    ids = draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True))
    p = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    seed = draw(st.integers(0, 3))
    emb = np.random.default_rng(seed).normal(size=(n, 4))
    human = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    machine = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    review = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    config = PolicyConfig(
        tau=draw(st.floats(0.5, 1.0)), cluster_confidence=draw(st.floats(0, 1)),
        cluster_agreement=draw(st.floats(0, 1)), n_clusters=draw(st.integers(1, 6)),
        max_auto_per_class=draw(st.integers(0, 10)), strategy=draw(st.sampled_from(STRATEGIES)),
        human_budget=draw(st.integers(0, 12)), diversity=draw(st.booleans()), seed=seed)
    return ids, probabilities_from_p_defect(p, CLASSES), emb, human, machine, review, config


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds())
def test_property_humans_budget_caps_and_determinism(case):
    ids, probs, emb, human, machine, review, config = case
    plan = plan_round(ids, probs, emb, CLASSES, config, human_labelled=human, machine_labelled=machine,
                      needs_review=review)
    auto = [a.task_id for a in plan.auto_labels]
    routed = [r.task_id for r in plan.review]
    human_ids = {t for t, h in zip(ids, human) if h}
    machine_ids = {t for t, m in zip(ids, machine) if m}
    review_ids = {t for t, r in zip(ids, review) if r}
    # a task a person annotated is never auto-labelled (nor routed again); nothing is labelled twice
    assert not set(auto) & (human_ids | machine_ids | review_ids)
    assert not set(routed) & (human_ids | machine_ids)
    assert len(auto) == len(set(auto)) and len(routed) == len(set(routed)) and not set(auto) & set(routed)
    # budget and caps hold
    assert len(routed) <= config.human_budget
    for name in CLASSES:
        assert sum(a.label == name for a in plan.auto_labels) <= config.max_auto_per_class
    # every auto-label passes tau
    assert all(a.confidence >= config.tau for a in plan.auto_labels)
    # the same inputs give the same decisions, in any input order
    again = plan_round(ids, probs, emb, CLASSES, config, human_labelled=human, machine_labelled=machine,
                       needs_review=review)
    assert again == plan
    perm = np.random.default_rng(1).permutation(len(ids))
    shuffled = plan_round([ids[i] for i in perm], probs[perm], emb[perm], CLASSES, config,
                          human_labelled=[human[i] for i in perm], machine_labelled=[machine[i] for i in perm],
                          needs_review=[review[i] for i in perm])
    assert shuffled.auto_labels == plan.auto_labels and shuffled.review == plan.review


def test_wilson_interval_and_audit_verdict():
    from mlproject.loop.policy import judge_audit, wilson_interval

    low, high = wilson_interval(20, 20)
    assert 0.83 < low < 0.85 and high == 1.0
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)
    fine = judge_audit(20, 20, target=0.995, tau=0.95)
    assert not fine.below_target and fine.new_tau is None and fine.precision == 1.0
    bad = judge_audit(15, 20, target=0.995, tau=0.95)
    assert bad.below_target and bad.new_tau == pytest.approx(0.975)
    unsure = judge_audit(199, 200, target=0.995, tau=0.95)  # one error in 200: not enough evidence
    assert not unsure.below_target
    assert judge_audit(0, 0, target=0.99, tau=0.95).audited == 0
