"""The budgeted search for the ``frozen``/``finetune`` head: learning rate, dropout and width (0: a
linear head), each ``auto`` or given.

The head reads pooled feature vectors computed once (:class:`~mlproject.training.head_training.TrainingInputs`),
so a candidate costs seconds: each is a fresh head trained by the warm-up's own
:func:`~mlproject.training.head_training.fit_head` on the training vectors, with early stopping on
the validation split, and scored by its best class-balanced validation loss (what early stopping
minimises; continuous, so a validation split with few defects still ranks candidates where AUC
ties). The fixed default head and a linear one are the first candidates (:func:`starting_points`).
With ``search_data="train+val_cv"`` each candidate is instead trained and scored once per
stratified fold of train + validation together (every image held out once; as the ``svm`` search
does). Nothing else is seen: the test split never reaches the search. Optuna's TPE, seeded, within
a trial count and a time budget. Wider heads overfit small training sets (suite, DAGM: validation
loss 1.03 -> 2.75 with the fixed 256-unit head), so the space reaches down to a linear head.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import keras
import numpy as np
from sklearn.model_selection import StratifiedKFold

from mlproject.models.variants import build_head
from mlproject.training.head_training import HeadTrainingConfig, fit_head
from mlproject.training.svm_training import METRIC_PREFIX, SEARCH_DATA, validation_auc

AUTO = "auto"
#: each setting's default (the entry points' parsers show these): the fixed head the suite measured
DEFAULT_LR_HEAD, DEFAULT_DROPOUT, DEFAULT_DENSE_UNITS = HeadTrainingConfig.lr_head, 0.5, 256


def parse_auto(kind: type) -> Callable[[str], float | int | str]:
    """An argparse type: ``auto``, or a number of ``kind`` (MLflow passes whole numbers as "256.0")."""
    def parse(value: str):
        text = str(value).strip().lower()
        if text == AUTO:
            return AUTO
        number = float(text)
        if kind is int:
            if not number.is_integer():
                raise ValueError(f"expected a whole number or 'auto', got {value!r}")
            return int(number)
        return number
    parse.__name__ = f"{kind.__name__} or auto"
    return parse


@dataclass(frozen=True)
class HeadSearchSettings:
    """Each head setting given, or ``auto`` (searched); the search's space and budget."""

    lr_head: float | str = DEFAULT_LR_HEAD
    dropout: float | str = DEFAULT_DROPOUT
    dense_units: int | str = DEFAULT_DENSE_UNITS
    search_trials: int = 20
    search_budget_s: float = 180.0
    lr_range: tuple[float, float] = (1e-4, 1e-2)
    dropout_range: tuple[float, float] = (0.0, 0.7)
    dense_units_choices: tuple[int, ...] = (0, 64, 256)
    #: what each candidate is scored on (:data:`~mlproject.training.svm_training.SEARCH_DATA`)
    search_data: str = "val"
    search_folds: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.lr_head != AUTO and not (isinstance(self.lr_head, (int, float)) and self.lr_head > 0):
            raise ValueError(f"lr_head must be a positive number or 'auto', got {self.lr_head!r}")
        if self.dropout != AUTO and not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1) or 'auto', got {self.dropout!r}")
        if self.dense_units != AUTO and not (isinstance(self.dense_units, int) and self.dense_units >= 0):
            raise ValueError(f"dense_units must be a whole number >= 0 (0: a linear head) or 'auto', "
                             f"got {self.dense_units!r}")
        if self.search_trials < 1 or self.search_budget_s <= 0:
            raise ValueError("head_search_trials must be >= 1 and head_search_budget_s > 0")
        if self.search_data not in SEARCH_DATA:
            raise ValueError(f"head_search_data must be one of {SEARCH_DATA}, got {self.search_data!r}")
        if self.search_folds < 2:
            raise ValueError(f"head_search_folds must be >= 2, got {self.search_folds}")

    @property
    def needs_search(self) -> bool:
        return AUTO in (self.lr_head, self.dropout, self.dense_units)

    def given_or_default(self) -> "HeadChoice":
        """The head to build before a search: each given setting, or its default where ``auto``."""
        pick = lambda value, default: default if value == AUTO else value  # noqa: E731
        return HeadChoice(float(pick(self.lr_head, DEFAULT_LR_HEAD)), float(pick(self.dropout, DEFAULT_DROPOUT)),
                          int(pick(self.dense_units, DEFAULT_DENSE_UNITS)))


#: The entry points' head: searched, each candidate cross-validated over train + validation. On repeated
#: splits without the test part (benchmarks/head_search_cv.py, RESULTS.md "The `frozen` head") it was at
#: least the fixed 256-unit head on every suite dataset and far above it on DAGM, whose small training
#: set the wide head overfits; scored on the validation split alone it lost on elpv. ``finetune``'s
#: warm-up is the same head on the same vectors, so it starts from the same choice.
SEARCHED_HEAD = HeadSearchSettings(lr_head=AUTO, dropout=AUTO, dense_units=AUTO, search_data="train+val_cv")


@dataclass(frozen=True)
class HeadChoice:
    lr_head: float
    dropout: float
    dense_units: int


@dataclass
class HeadTrial:
    number: int
    choice: HeadChoice
    #: the best class-balanced held-out loss over its epochs (the epoch early stopping keeps; with
    #: cross-validation, the mean over the folds)
    val_loss: float
    #: ROC AUC of that epoch's held-out scores
    val_roc_auc: float
    epochs: int
    seconds: float
    #: "val" or "train+val_cv": what it was scored on (its child-run metrics are named after it)
    scored_on: str = "val"

    @property
    def metric_prefix(self) -> str:
        return METRIC_PREFIX[self.scored_on]


@dataclass
class HeadSearchResult:
    choice: HeadChoice
    trials: list[HeadTrial] = field(default_factory=list)
    searched: bool = True
    #: what the trials were scored on; "val" where cross-validation could not run (see :func:`search_head`)
    search_data: str = "val"


def best_head_trial(trials: list[HeadTrial]) -> HeadTrial:
    """The lowest validation loss; ties go to the narrower head, then the earlier trial."""
    scored = [t for t in trials if math.isfinite(t.val_loss)]
    if not scored:
        raise ValueError("no head candidate could be scored on the validation split (did every one diverge?)")
    return min(scored, key=lambda t: (round(t.val_loss, 9), t.choice.dense_units, t.number))


def _fit_and_score(choice: HeadChoice, vectors_train: list, y_train, vectors_held, y_held, config: HeadTrainingConfig,
                   seed: int) -> tuple[float, float, int]:
    """A fresh head with ``choice``'s settings trained on ``vectors_train`` with early stopping on the
    held-out vectors: (its best class-balanced held-out loss, the held-out AUC of that epoch, epochs)."""
    keras.utils.set_random_seed(seed)  # each candidate from the same start: only its settings differ
    head = build_head(int(vectors_held.shape[-1]), dense_units=choice.dense_units, dropout=choice.dropout)
    history: dict = {}
    epochs = fit_head(head, vectors_train, y_train, vectors_held, y_held, replace(config, lr_head=choice.lr_head),
                      history=history, verbose=0)
    losses = np.asarray(history.get("val_loss", []), dtype=float)
    loss = float(np.nanmin(losses)) if len(losses) and np.isfinite(losses).any() else math.inf
    p_held = np.asarray(head.predict(vectors_held, batch_size=config.batch_size, verbose=0))[:, 0]
    auc = validation_auc(p_held, np.asarray(y_held).astype(int)) if np.isfinite(p_held).all() else math.nan
    return loss, auc, epochs


def _cv_folds(vectors_train: list, y_train, vectors_val, y_val, settings: HeadSearchSettings):
    """(pooled vectors, pooled labels, folds) for cross-validation over train + validation, or None where
    it cannot run: a class with fewer images than folds, or training vectors of several views (the
    validation images have one; the candidates would be scored on a mix)."""
    y_pool = np.concatenate([y_train, y_val]).astype(int)
    counts = np.bincount(y_pool)
    if len(vectors_train) != 1 or len(counts) < 2 or counts.min() < settings.search_folds:
        return None
    x_pool = np.concatenate([vectors_train[0], vectors_val])
    folds = StratifiedKFold(settings.search_folds, shuffle=True, random_state=settings.seed).split(x_pool, y_pool)
    return x_pool, y_pool, list(folds)


def search_head(vectors_train: list, y_train: np.ndarray, vectors_val: np.ndarray, y_val: np.ndarray,
                settings: HeadSearchSettings, config: HeadTrainingConfig, *,
                on_trial: Callable[[HeadTrial], None] | None = None) -> HeadSearchResult:
    """The head for :func:`~mlproject.models.variants.build_head`: as given, or searched on the
    training vectors (one array per view) and the validation ones, never anything else. ``config``:
    the warm-up's epochs, patience, batch size and seed, which every candidate trains with."""
    if not settings.needs_search:
        return HeadSearchResult(settings.given_or_default(), searched=False)
    import optuna

    vectors_val = np.asarray(vectors_val)
    pooled = _cv_folds(vectors_train, y_train, vectors_val, y_val, settings) \
        if settings.search_data == "train+val_cv" else None
    scored_on = "val" if pooled is None else "train+val_cv"

    def score(choice: HeadChoice) -> tuple[float, float, int]:
        if pooled is None:
            return _fit_and_score(choice, vectors_train, y_train, vectors_val, y_val, config, settings.seed)
        x_pool, y_pool, folds = pooled
        per_fold = [_fit_and_score(choice, [x_pool[fit]], y_pool[fit], x_pool[held], y_pool[held], config, settings.seed)
                    for fit, held in folds]
        return tuple(float(np.mean(values)) for values in zip(*per_fold))  # type: ignore[return-value]

    trials: list[HeadTrial] = []

    def objective(trial) -> float:
        choice = HeadChoice(
            lr_head=float(settings.lr_head) if settings.lr_head != AUTO
            else trial.suggest_float("lr_head", *settings.lr_range, log=True),
            dropout=float(settings.dropout) if settings.dropout != AUTO
            else trial.suggest_float("dropout", *settings.dropout_range),
            dense_units=int(settings.dense_units) if settings.dense_units != AUTO
            else trial.suggest_categorical("dense_units", list(settings.dense_units_choices)))
        started = time.perf_counter()
        loss, auc, epochs = score(choice)
        record = HeadTrial(trial.number, choice, loss, auc, int(round(epochs)), time.perf_counter() - started, scored_on)
        trials.append(record)
        if on_trial is not None:
            on_trial(record)
        return loss if math.isfinite(loss) else 1e9

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=settings.seed))
    for start in starting_points(settings):
        study.enqueue_trial(start)
    study.optimize(objective, n_trials=settings.search_trials, timeout=settings.search_budget_s)
    return HeadSearchResult(best_head_trial(trials).choice, trials, search_data=scored_on)


def starting_points(settings: HeadSearchSettings) -> list[dict]:
    """The candidates tried first, before Optuna samples: the fixed default head, then (where the width
    is searched) a linear one, the baseline's shape. A budget that allows a few trials (a 5-fold
    cross-validated trial takes tens of seconds on 2 vCPUs) then still compares the default with the
    head most unlike it, instead of a few random draws; the default is kept unless a candidate beats it."""
    searched = [name for name in ("lr_head", "dropout", "dense_units") if getattr(settings, name) == AUTO]
    default = {name: getattr(settings.given_or_default(), name) for name in searched}
    points = [default]
    if "dense_units" in searched and 0 in settings.dense_units_choices:
        points.append({**default, "dense_units": 0})
    return points
