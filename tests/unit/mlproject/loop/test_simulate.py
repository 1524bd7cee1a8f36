"""The offline replay of the loop: curves, oracle, auto-labels, summary and plot (synthetic features)."""

import math

import numpy as np
import pandas as pd
import pytest

from mlproject.loop.policy import PolicyConfig
from mlproject.loop.simulate import (
    SimulationConfig,
    config_params,
    labels_to_reach,
    plot_learning_curves,
    simulate,
    summarize,
)


def separable_features(n=200, defect_share=0.15, seed=0):
    """Rare positives along one direction, plus noise dimensions; a linear model separates them."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < defect_share).astype(int)
    y[:4] = 1
    x = rng.normal(size=(n, 6))
    x[:, 0] += 4 * y
    return x, y


def test_simulation_curves_summary_and_plot(tmp_path):
    x, y = separable_features()
    config = SimulationConfig(strategies=("random", "margin"), seeds=(0, 1), initial_labels=6, budget=8,
                              max_human=40, policy=PolicyConfig(tau=0.95))
    curves, full, sizes = simulate(x, y, ["ok", "defect"], config, progress=False)
    assert sizes["pool"] + sizes["test"] == len(y)
    assert set(curves["strategy"]) == {"random", "margin"} and set(curves["auto_labels"]) == {False, True}
    assert set(curves["seed"]) == {0, 1}
    for _, curve in curves.groupby(["strategy", "auto_labels", "seed"]):
        human = curve.sort_values("round")["n_human"].tolist()
        assert human == sorted(human) and human[-1] <= 40
        assert all(b - a <= 8 for a, b in zip(human, human[1:]))  # the budget per round holds
    without = curves[~curves["auto_labels"]]
    assert (without["n_auto"] == 0).all()
    assert curves[curves["auto_labels"]]["n_auto"].max() > 0
    assert 0.9 <= full <= 1.0  # the data is separable

    summary = summarize(curves, full, sizes["pool"])
    assert set(summary["strategy"]) == {"random", "margin"}
    random_row = summary[(summary.strategy == "random") & ~summary.auto_labels].iloc[0]
    if not math.isnan(random_row.labels_to_target):
        assert random_row.ratio_to_random == pytest.approx(1.0)
    auto_rows = summary[summary.auto_labels]
    assert ((auto_rows.auto_label_precision > 0.9) | auto_rows.auto_label_precision.isna()).all()

    png = plot_learning_curves(curves, full, tmp_path / "curves.png", title="test")
    assert (tmp_path / "curves.png").stat().st_size > 10_000 and png.endswith("curves.png")


def test_uncertainty_sampling_finds_the_rare_class_sooner_than_random():
    x, y = separable_features(n=300, defect_share=0.08, seed=4)
    config = SimulationConfig(strategies=("random", "least_confidence"), auto_label_modes=(False,), seeds=(0, 1, 2),
                              initial_labels=6, budget=6, max_human=60)
    curves, full, sizes = simulate(x, y, ["ok", "defect"], config, progress=False)
    summary = summarize(curves, full, sizes["pool"]).set_index("strategy")
    assert summary.loc["least_confidence", "labels_to_target"] <= summary.loc["random", "labels_to_target"] \
        or math.isnan(summary.loc["random", "labels_to_target"])


def test_labels_to_reach_and_params():
    curve = pd.DataFrame({"n_human": [10, 20, 30], "balanced_accuracy": [0.5, 0.95, 0.9]})
    assert labels_to_reach(curve, 0.94) == 20
    assert math.isnan(labels_to_reach(curve, 0.99))
    params = config_params(SimulationConfig(seeds=(0, 1)))
    assert params["seeds"] == "0,1" and params["policy_tau"] == 0.95 and "policy_strategy" not in params


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="strategies: unknown smart"):
        SimulationConfig(strategies=("smart",))
    with pytest.raises(ValueError, match="seed"):
        SimulationConfig(seeds=())


def test_fast_variant_input_and_clustering_embeddings():
    from mlproject.loop.simulate import clustering_embeddings, fast_variant_input

    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(60, 40))) * np.linspace(1, 100, 40)  # skewed, non-negative, like ReLU statistics
    assert np.allclose(fast_variant_input(x), x)  # nothing asked: unchanged
    assert np.allclose(fast_variant_input(x, log_features=True), np.log1p(x))
    reduced = fast_variant_input(x, log_features=True, pca_dims=5)
    assert reduced.shape == (60, 5)
    assert np.allclose(reduced.std(axis=0), 1.0, atol=0.05)  # whitened components
    assert np.allclose(reduced, fast_variant_input(x, log_features=True, pca_dims=5))  # deterministic
    assert fast_variant_input(x, pca_dims=100).shape == x.shape  # more dims than there are: no PCA
    emb = clustering_embeddings(x, max_dims=8)
    assert emb.shape == (60, 8)
    assert clustering_embeddings(x[:, :6], max_dims=8).shape == (60, 6)  # already small: only normalised
    assert np.allclose(np.linalg.norm(clustering_embeddings(x[:, :6]), axis=1), 1.0)
    with pytest.raises(ValueError, match="pca_dims"):
        SimulationConfig(pca_dims=-1)


def test_curves_count_the_defects_people_found_and_the_auto_labels_by_class():
    x, y = separable_features()
    config = SimulationConfig(strategies=("least_confidence",), seeds=(0,), initial_labels=6, budget=8, max_human=40,
                              pca_dims=4, policy=PolicyConfig(tau=0.9, cluster_confidence=0.5, cluster_agreement=0.5))
    curves, _, _ = simulate(x, y, ["ok", "defect"], config, progress=False)
    assert (curves["n_human_positive"] <= curves["n_human"]).all()
    assert (curves["n_human_positive"] >= 2).all()  # the initial batch holds both classes
    auto = curves[curves["auto_labels"]]
    assert auto["n_auto"].max() > 0
    assert (auto["n_auto_positive"] <= auto["n_auto"]).all()
    assert (auto["auto_positive_correct"] <= auto["n_auto_positive"]).all()
    assert (auto["auto_correct"] <= auto["n_auto"]).all()
    assert config_params(config)["pca_dims"] == 4


def test_each_round_trains_on_the_labelled_set_in_a_fixed_order():
    """A curve that ends with every pool label ends at the full-label accuracy of the same seed."""
    x, y = separable_features(n=120, seed=2)
    seen = []

    def fit(features, labels, seed):
        seen.append(features.copy())
        from mlproject.loop.simulate import fit_fast_variant
        return fit_fast_variant(features, labels, seed)

    config = SimulationConfig(strategies=("margin",), auto_label_modes=(False,), seeds=(0,), initial_labels=6,
                              budget=30, policy=PolicyConfig(tau=0.95))
    curves, full, sizes = simulate(x, y, ["ok", "defect"], config, progress=False, fit=fit)
    last = curves.sort_values("round").iloc[-1]
    assert last["n_human"] == sizes["pool"]
    assert np.array_equal(seen[0], seen[-1])  # the full-label fit and the last round see the same rows, same order
    assert last["balanced_accuracy"] == pytest.approx(full)
