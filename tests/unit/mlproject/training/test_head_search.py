"""The head search: settings, the choice rule, and a search on feature vectors that sees train and
validation only (Optuna and Keras for real, small synthetic vectors)."""

import math
from dataclasses import replace

import numpy as np
import pytest

from mlproject.models.variants import build_head, build_head_classifier
from mlproject.training.head_search import (
    AUTO,
    HeadChoice,
    HeadSearchSettings,
    HeadTrial,
    best_head_trial,
    parse_auto,
    search_head,
)
from mlproject.training.head_training import HeadTrainingConfig

CONFIG = HeadTrainingConfig(warmup_epochs=15, warmup_patience=3, batch_size=32, finetune_epochs=0)


def vectors(n, seed, informative=3, noise=20):
    """Two classes (1 in 4 defective) apart along ``informative`` of the dimensions, the rest noise."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 4 == 0).astype(int)
    x = rng.normal(0, 1, (n, informative + noise)) * 5 + 3  # off-scale: the head standardises
    x[:, :informative] += 15 * y[:, None]  # three noise scales apart
    return x.astype(np.float32), y


def test_auto_parses_as_auto_and_numbers_as_their_kind():
    assert parse_auto(float)("AUTO") == AUTO and parse_auto(float)("0.001") == 0.001
    assert parse_auto(int)("256.0") == 256 and isinstance(parse_auto(int)("64"), int)
    with pytest.raises(ValueError):
        parse_auto(int)("1.5")


@pytest.mark.parametrize("bad", [{"lr_head": 0}, {"dropout": 1.0}, {"dense_units": -1}, {"search_trials": 0},
                                 {"search_budget_s": 0}, {"lr_head": "fast"}])
def test_settings_refuse_what_cannot_train(bad):
    with pytest.raises(ValueError):
        HeadSearchSettings(**bad)


def test_a_setting_given_is_kept_and_auto_starts_from_the_default():
    settings = HeadSearchSettings(lr_head=AUTO, dropout=0.2, dense_units=AUTO)
    assert settings.needs_search and not HeadSearchSettings().needs_search
    assert settings.given_or_default() == HeadChoice(1e-3, 0.2, 256)


def test_the_lowest_validation_loss_wins_ties_go_to_the_narrower_head_and_diverged_trials_never():
    def trial(number, loss, units):
        return HeadTrial(number, HeadChoice(1e-3, 0.5, units), loss, 0.9, 5, 1.0)

    assert best_head_trial([trial(0, 0.4, 256), trial(1, 0.3, 256), trial(2, math.inf, 0)]).number == 1
    assert best_head_trial([trial(0, 0.3, 256), trial(1, 0.3, 0), trial(2, 0.3, 64)]).number == 1
    with pytest.raises(ValueError, match="no head candidate"):
        best_head_trial([trial(0, math.inf, 0), trial(1, math.nan, 64)])


def test_a_linear_head_has_no_hidden_layer_and_the_classifier_builds_with_it():
    linear = build_head(10, dense_units=0, dropout=0.1)
    assert "head_dense" not in [layer.name for layer in linear.layers]
    assert linear.count_params() == 2 * 10 + 11  # the standardiser's mean and scale, then 10 weights + bias
    classifier = build_head_classifier("none", 32, trainable_blocks=0, dense_units=0, dropout=0.0)
    scores = np.asarray(classifier.full(np.zeros((2, 32, 32, 3), np.float32)))
    assert scores.shape == (2, 1) and np.all((scores >= 0) & (scores <= 1))


def test_the_search_scores_each_candidate_on_validation_and_keeps_the_best():
    x_train, y_train = vectors(160, seed=0)
    x_val, y_val = vectors(64, seed=1)
    seen = []
    settings = HeadSearchSettings(lr_head=AUTO, dropout=AUTO, dense_units=AUTO, search_trials=5)
    result = search_head([x_train], y_train, x_val, y_val, settings, CONFIG, on_trial=seen.append)
    assert result.searched and len(result.trials) == len(seen) == 5
    assert result.choice == best_head_trial(result.trials).choice
    for trial in result.trials:
        assert 1e-4 <= trial.choice.lr_head <= 1e-2 and 0 <= trial.choice.dropout <= 0.7
        assert trial.choice.dense_units in (0, 64, 256) and 1 <= trial.epochs <= CONFIG.warmup_epochs
        assert math.isfinite(trial.val_loss) and 0 <= trial.val_roc_auc <= 1
    assert max(t.val_roc_auc for t in result.trials) > 0.9  # the classes are separable: candidates learn them


def test_the_default_head_and_a_linear_one_are_the_first_candidates():
    x_train, y_train = vectors(120, seed=0)
    x_val, y_val = vectors(48, seed=1)
    settings = HeadSearchSettings(lr_head=AUTO, dropout=AUTO, dense_units=AUTO, search_trials=3)
    trials = search_head([x_train], y_train, x_val, y_val, settings, CONFIG).trials
    assert trials[0].choice == HeadChoice(1e-3, 0.5, 256) and trials[1].choice == HeadChoice(1e-3, 0.5, 0)
    assert trials[2].choice not in (trials[0].choice, trials[1].choice)  # then Optuna samples
    only_lr = search_head([x_train], y_train, x_val, y_val, HeadSearchSettings(lr_head=AUTO, dense_units=64,
                                                                              search_trials=1), CONFIG).trials
    assert [t.choice for t in only_lr] == [HeadChoice(1e-3, 0.5, 64)]  # the given width, from the default rate


def test_the_search_is_reproducible_and_keeps_what_was_given():
    x_train, y_train = vectors(120, seed=0)
    x_val, y_val = vectors(48, seed=1)
    settings = HeadSearchSettings(lr_head=AUTO, dropout=0.25, dense_units=AUTO, search_trials=3)
    first = search_head([x_train], y_train, x_val, y_val, settings, CONFIG)
    second = search_head([x_train], y_train, x_val, y_val, settings, CONFIG)
    assert [t.choice for t in first.trials] == [t.choice for t in second.trials]
    np.testing.assert_allclose([t.val_loss for t in first.trials], [t.val_loss for t in second.trials], rtol=1e-5)
    assert all(t.choice.dropout == 0.25 for t in first.trials)


def test_nothing_searched_when_every_setting_is_given():
    x, y = vectors(40, seed=0)
    result = search_head([x], y, x, y, HeadSearchSettings(lr_head=0.01, dropout=0.1, dense_units=64), CONFIG)
    assert not result.searched and result.trials == [] and result.choice == HeadChoice(0.01, 0.1, 64)


def test_the_choice_follows_validation_not_training_data_alone():
    # Same training vectors; validation labels that agree with them, then reversed: the search
    # ranks candidates on validation, so its losses there must move with it.
    x_train, y_train = vectors(120, seed=0)
    x_val, y_val = vectors(48, seed=1)
    settings = HeadSearchSettings(lr_head=AUTO, dropout=AUTO, dense_units=AUTO, search_trials=2)
    agree = search_head([x_train], y_train, x_val, y_val, settings, CONFIG)
    reverse = search_head([x_train], y_train, x_val, 1 - y_val, settings, CONFIG)
    assert min(t.val_loss for t in agree.trials) < min(t.val_loss for t in reverse.trials)


def test_cross_validation_scores_each_candidate_on_every_fold_of_train_and_validation():
    x_train, y_train = vectors(120, seed=0)
    x_val, y_val = vectors(40, seed=1)
    settings = HeadSearchSettings(lr_head=AUTO, dropout=0.0, dense_units=0, search_trials=2, search_data="train+val_cv",
                                  search_folds=3)
    result = search_head([x_train], y_train, x_val, y_val, settings, CONFIG)
    assert result.search_data == "train+val_cv"
    assert all(t.scored_on == "train+val_cv" and t.metric_prefix == "cv_" for t in result.trials)
    # the same candidate scored on validation alone gets another loss: the folds are what it was scored on
    on_val = search_head([x_train], y_train, x_val, y_val, replace(settings, search_data="val"), CONFIG)
    assert on_val.trials[0].choice == result.trials[0].choice
    assert on_val.trials[0].val_loss != pytest.approx(result.trials[0].val_loss, rel=1e-6)


@pytest.mark.parametrize("why", ["too few defects", "several views"])
def test_cross_validation_falls_back_to_validation_where_it_cannot_run(why):
    x_train, y_train = vectors(120, seed=0)
    x_val, y_val = vectors(40, seed=1)
    views = [x_train]
    if why == "too few defects":
        keep = np.flatnonzero(y_train == 0).tolist() + np.flatnonzero(y_train == 1)[:2].tolist()
        x_train, y_train, views = x_train[keep], y_train[keep], [x_train[keep]]
        y_val = np.zeros_like(y_val)
        y_val[:2] = 1  # 4 defects in train + validation: fewer than 5 folds
    else:
        views = [x_train, x_train[:, ::-1].copy()]
    settings = HeadSearchSettings(lr_head=AUTO, search_trials=1, search_data="train+val_cv")
    result = search_head(views, y_train, x_val, y_val, settings, CONFIG)
    assert result.search_data == "val" and result.trials[0].scored_on == "val"


def test_settings_refuse_unknown_search_data_and_too_few_folds():
    with pytest.raises(ValueError, match="head_search_data"):
        HeadSearchSettings(search_data="test")
    with pytest.raises(ValueError, match="head_search_folds"):
        HeadSearchSettings(search_folds=1)
