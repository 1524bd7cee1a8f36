"""The ``svm`` variant's classifier: (log-compressed) standardised VGG16 features -> SVM with
calibrated probabilities, and the budgeted search for its ``C`` and kernel on the validation split.

The search is Optuna's (TPE, seeded); each trial fits on the training split and is scored on the
validation split only, by ROC AUC of the SVM's decision function (threshold-free, so the operating
point, chosen later on the same validation split, does not steer it). Among trials whose AUC ties (on
easy data many reach 1.0) the lowest class-balanced validation hinge loss wins, then the smallest ``C``:
in repeated splits that exclude the test part this called held-out images better on casting_impeller
and the same on dagm and elpv_solar (benchmarks/operating_point_cv.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import hinge_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC
from sklearn.utils.class_weight import compute_sample_weight

from mlproject.models.feature_transforms import signed_log1p

AUTO = "auto"
KERNELS = ("linear", "rbf", "poly", "sigmoid")
#: what each search trial is scored on: the validation split (fit on train), or k-fold cross-validation
#: over train + validation together (each image held out once; never the test split)
SEARCH_DATA = ("val", "train+val_cv")
#: how a trial's metrics are named after what it was scored on
METRIC_PREFIX = {"val": "val_", "train+val_cv": "cv_"}


@dataclass(frozen=True)
class SvmSettings:
    """``C`` and ``kernel`` given, or ``auto`` (searched); the search's space and budget."""

    C: float | str = AUTO
    kernel: str = AUTO
    log_features: bool = True
    search_trials: int = 24
    search_budget_s: float = 300.0
    C_range: tuple[float, float] = (1e-3, 1e2)
    kernels: tuple[str, ...] = ("linear", "rbf")
    #: cross-validation over train + val: a validation split with a few defects ties most candidates
    search_data: str = "train+val_cv"
    search_folds: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.C != AUTO and not (isinstance(self.C, (int, float)) and self.C > 0):
            raise ValueError(f"C must be a positive number or 'auto', got {self.C!r}")
        if self.kernel != AUTO and self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS} or 'auto', got {self.kernel!r}")
        if self.search_trials < 1 or self.search_budget_s <= 0:
            raise ValueError("search_trials must be >= 1 and search_budget_s > 0")
        if self.search_data not in SEARCH_DATA:
            raise ValueError(f"search_data must be one of {SEARCH_DATA}, got {self.search_data!r}")
        if self.search_folds < 2:
            raise ValueError(f"search_folds must be >= 2, got {self.search_folds}")

    @property
    def needs_search(self) -> bool:
        return self.C == AUTO or self.kernel == AUTO


@dataclass
class Trial:
    number: int
    C: float
    kernel: str
    #: ROC AUC on the search data (see ``scored_on``)
    roc_auc: float
    seconds: float
    #: class-balanced hinge loss of the decision function on the held-out images: how far inside the margin
    #: (or past it) they fall; it still separates candidates whose AUC ties (e.g. all at 1.0)
    hinge: float = math.nan
    #: "val" or "train+val_cv" (see :data:`SEARCH_DATA`)
    scored_on: str = "val"


@dataclass
class SearchResult:
    C: float
    kernel: str
    trials: list[Trial] = field(default_factory=list)
    searched: bool = True
    #: what the trials were scored on (see :data:`SEARCH_DATA`); "val" when too few images of a class
    #: allow ``search_folds`` folds
    search_data: str = "val"


def parse_C(value: str) -> float | str:
    text = str(value).strip().lower()
    return AUTO if text == AUTO else float(text)


def _scaler(log_features: bool) -> list:
    steps = [("log", FunctionTransformer(signed_log1p))] if log_features else []
    return steps + [("scale", StandardScaler())]


def _svc(C: float, kernel: str, seed: int) -> SVC:
    return SVC(C=C, kernel=kernel, class_weight="balanced", random_state=seed)


def fit_svm(features: np.ndarray, labels: np.ndarray, *, C: float = 1.0, kernel: str = "rbf", seed: int = 0,
            log_features: bool = False) -> Pipeline:
    """Balanced-class SVM; probabilities come from cross-validated sigmoid calibration.

    ``SVC(probability=True)`` is deprecated in scikit-learn 1.9; ``CalibratedClassifierCV`` replaces it.
    """
    labels = np.asarray(labels).astype(int)
    smallest_class = int(np.bincount(labels).min()) if len(labels) else 0
    if len(np.unique(labels)) < 2 or smallest_class < 2:
        raise ValueError("the svm variant needs at least 2 training images of each class")
    # Shuffled folds: datasets arrive sorted (by class folder, then by name, and neighbouring names often
    # come from one part or module), and contiguous folds would calibrate each model on images unlike
    # the ones it is scored on; a calibrator fitted on such a fold can even flip the ranking.
    folds = StratifiedKFold(n_splits=min(3, smallest_class), shuffle=True, random_state=seed)
    calibrated = CalibratedClassifierCV(_svc(C, kernel, seed), method="sigmoid", cv=folds)
    return Pipeline([*_scaler(log_features), ("svm", calibrated)]).fit(features, labels)


def validation_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (one-vs-rest, macro, for more than two classes); NaN when a class is missing."""
    if len(np.unique(labels)) < 2:
        return math.nan
    if scores.ndim == 1:
        return float(roc_auc_score(labels, scores))
    # roc_auc_score wants probabilities for several classes; a softmax keeps each row's ranking
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return float(roc_auc_score(labels, shifted / shifted.sum(axis=1, keepdims=True), multi_class="ovr",
                               average="macro"))


def validation_hinge(decision: np.ndarray, labels: np.ndarray) -> float:
    """Hinge loss with each class weighted equally (a rare defect class counts as much as the rest)."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return math.nan
    classes = np.arange(decision.shape[1]) if decision.ndim == 2 else np.array([0, 1])
    return float(hinge_loss(labels, decision, labels=classes, sample_weight=compute_sample_weight("balanced", labels)))


TIE_BREAKS = ("smallest_C", "hinge")


def best_trial(trials: list[Trial], tie_break: str = "hinge") -> Trial:
    """The highest held-out AUC; ties go to the lowest held-out hinge loss, then the smallest C
    (the simplest boundary). ``tie_break="smallest_C"`` skips the hinge step (the earlier rule, kept
    so the benchmark can compare the two)."""
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    scored = [t for t in trials if not math.isnan(t.roc_auc)]
    if not scored:
        raise ValueError("no search trial could be scored on its held-out images (does the validation split hold "
                         "both classes?)")
    top = max(t.roc_auc for t in scored)
    tied = [t for t in scored if t.roc_auc >= top - 1e-9]
    if tie_break == "hinge":
        return min(tied, key=lambda t: (math.inf if math.isnan(t.hinge) else t.hinge, t.C, t.number))
    return min(tied, key=lambda t: (t.C, t.number))


def _scorer(train, val, settings: SvmSettings) -> tuple[Callable[[float, str], tuple[float, float]], str]:
    """A function (C, kernel) -> (AUC, hinge) on the search data, and which data that is."""
    x_train, y_train = train
    x_val, y_val = val
    scaler = Pipeline(_scaler(settings.log_features)).fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    y_pool = np.concatenate([y_train, y_val]).astype(int)
    counts = np.bincount(y_pool)
    if settings.search_data == "train+val_cv" and len(counts) >= 2 and counts.min() >= settings.search_folds:
        x_pool = np.concatenate([x_train, x_val])
        folds = list(StratifiedKFold(settings.search_folds, shuffle=True, random_state=settings.seed)
                     .split(x_pool, y_pool))

        def cross_validated(C: float, kernel: str) -> tuple[float, float]:
            aucs, hinges = [], []
            for fit_rows, held_rows in folds:
                decision = _svc(C, kernel, settings.seed).fit(x_pool[fit_rows], y_pool[fit_rows]) \
                    .decision_function(x_pool[held_rows])
                aucs.append(validation_auc(decision, y_pool[held_rows]))
                hinges.append(validation_hinge(decision, y_pool[held_rows]))
            return float(np.mean(aucs)), float(np.mean(hinges))

        return cross_validated, "train+val_cv"

    def on_validation(C: float, kernel: str) -> tuple[float, float]:
        decision = _svc(C, kernel, settings.seed).fit(x_train, y_train).decision_function(x_val)
        return validation_auc(decision, y_val), validation_hinge(decision, y_val)

    return on_validation, "val"


def search_svm(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], settings: SvmSettings,
               *, on_trial: Callable[[Trial], None] | None = None) -> SearchResult:
    """``C`` and kernel for :func:`fit_svm`: as given, or searched on ``val`` (``search_data="val"``) or
    on cross-validation over ``train`` + ``val`` (never anything else)."""
    if not settings.needs_search:
        return SearchResult(float(settings.C), settings.kernel, searched=False)
    import optuna

    score, search_data = _scorer(train, val, settings)
    trials: list[Trial] = []

    def objective(trial) -> float:
        C = float(settings.C) if settings.C != AUTO else trial.suggest_float("C", *settings.C_range, log=True)
        kernel = settings.kernel if settings.kernel != AUTO else trial.suggest_categorical("kernel", settings.kernels)
        started = time.perf_counter()
        auc, hinge = score(C, kernel)
        record = Trial(trial.number, C, kernel, auc, time.perf_counter() - started, hinge, scored_on=search_data)
        trials.append(record)
        if on_trial is not None:
            on_trial(record)
        return -1.0 if math.isnan(auc) else auc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=settings.seed))
    study.optimize(objective, n_trials=settings.search_trials, timeout=settings.search_budget_s)
    best = best_trial(trials)
    return SearchResult(best.C, best.kernel, trials, search_data=search_data)


def out_of_fold_scores(features: np.ndarray, labels: np.ndarray, *, C: float, kernel: str, seed: int = 0,
                       log_features: bool = False, folds: int = 3) -> np.ndarray | None:
    """P(defect) of each training image from a :func:`fit_svm` that did not see it; None when a class
    has too few images for ``folds`` folds whose fits each hold at least 4 of every class.

    The operating point is set on these plus the validation scores: five times as many images as the
    validation split alone, which called held-out images better on every suite dataset without
    touching a test split (benchmarks/operating_point_cv.py).
    """
    labels = np.asarray(labels).astype(int)
    counts = np.bincount(labels, minlength=2)
    if len(counts) != 2 or counts.min() < 2 * folds:
        return None
    scores = np.empty(len(labels))
    for fit_rows, held_rows in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels):
        model = fit_svm(features[fit_rows], labels[fit_rows], C=C, kernel=kernel, seed=seed, log_features=log_features)
        scores[held_rows] = model.predict_proba(features[held_rows])[:, 1]
    return scores
