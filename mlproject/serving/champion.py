"""The champion: the registered model version the ``champion`` alias points at, as every server and
round uses it.

One object for the backend, ``alloop sync``/``predict`` and the demo, so a label, its confidence
and the P(defect) read back from a stored prediction are computed one way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from integrations import mlflow_registry
from integrations.labelstudio.label_config import ChoicesTarget, map_classes, prediction_result

DEFAULT_CLASS_NAMES = ("ok", "defect")


def no_champion_message(model_name: str, where: str | None = None) -> str:
    """What to do when ``models:/NAME@champion`` does not exist."""
    store = mlflow_registry.redact(where or mlflow_registry.mlflow.get_tracking_uri())  # never a password
    return (f"registered model {model_name!r} has no champion in {store}: train one (`mlflow run . -e finetune`) "
            "and promote it (`mlflow run . -e promote`), or check MLFLOW_TRACKING_URI / --model-name")


@dataclass(frozen=True)
class Scores:
    """The champion's output for a batch of images: rows for the decodable ones (``good`` indices
    into the input), one :class:`~mlproject.data.decode.BadImageError` per other image."""

    p_defect: np.ndarray
    embeddings: np.ndarray
    good: list[int]
    errors: list


@dataclass(frozen=True)
class Champion:
    ref: Any  # mlflow_registry.VersionRef: str(ref) == "NAME/VERSION"
    model: Any  # mlproject.registry.pyfunc.DefectClassifierModel (the unwrapped python model)
    class_names: tuple[str, str]
    threshold: float

    @property
    def version(self) -> str:
        return str(self.ref)

    @property
    def positive(self) -> str:
        return self.class_names[1]

    @property
    def variant(self) -> str | None:
        """The training recipe (``svm``, ``frozen``, ``finetune``: the entry point that made it)."""
        config = getattr(self.model, "config", None) or {}
        return str(config["variant"]) if config.get("variant") else None

    def label_of(self, p_defect: float) -> str:
        return self.class_names[1] if p_defect >= self.threshold else self.class_names[0]

    def confidence_of(self, label: str, p_defect: float) -> float:
        """The score Label Studio shows: the probability of the chosen class."""
        return float(p_defect) if label == self.positive else 1.0 - float(p_defect)

    def p_defect_from(self, label: str | None, confidence: float | None) -> float | None:
        """P(defect) back from a stored (label, confidence)."""
        if label is None or confidence is None:
            return None
        return float(confidence) if label == self.positive else 1.0 - float(confidence)

    def score(self, images: list[bytes], sources: list[str]) -> Scores:
        """P(defect) and the backbone embedding of each image, from one forward pass."""
        p_defect, embeddings, good, errors = self.model.score_and_embed(images, sources=sources)
        return Scores(np.asarray(p_defect, np.float64), embeddings, list(good), list(errors))

    def choices_for(self, target: ChoicesTarget, label_map: dict | None = None) -> "ChampionChoices":
        """How this champion's classes fill ``target`` (raises LabelConfigError when they cannot)."""
        choice_of = map_classes(list(self.class_names), target.choices, label_map or {})
        return ChampionChoices(self, target, choice_of)


@dataclass(frozen=True)
class ChampionChoices:
    """A champion and a labeling config's <Choices>: the one place model output becomes a Label
    Studio result, and a stored result becomes model output again."""

    champion: Champion
    target: ChoicesTarget
    choice_of: dict  # class name -> choice value

    def result(self, label: str, confidence: float, version: str | None = None) -> dict:
        return prediction_result(self.target, self.choice_of[label], confidence, version or self.champion.version)

    def result_for(self, p_defect: float) -> dict:
        label = self.champion.label_of(p_defect)
        return self.result(label, self.champion.confidence_of(label, p_defect))

    def class_of_choices(self, choices) -> str | None:
        inverse = {v: k for k, v in self.choice_of.items()}
        return inverse.get(choices[0]) if choices else None

    def p_defect_of(self, prediction) -> float | None:
        """P(defect) back from a stored prediction: its score is the confidence of the chosen class."""
        return self.champion.p_defect_from(self.class_of_choices(prediction.choices), prediction.score)


class NotServableError(ValueError):
    """A registered version alloop cannot serve (not one of its models)."""


def load_champion(ref) -> Champion:
    model = mlflow_registry.load_pyfunc(ref).unwrap_python_model()
    config = dict(getattr(model, "config", None) or {})
    if not hasattr(model, "score_and_embed") or "threshold" not in config:
        raise NotServableError(f"{ref} is not an alloop classifier (no score_and_embed / threshold in its config): "
                               "register models with alloop's entry points (`mlflow run . -e finetune`)")
    names = tuple(config.get("class_names") or DEFAULT_CLASS_NAMES)
    return Champion(ref, model, (str(names[0]), str(names[1])), float(config["threshold"]))


def resolve_champion(model_name: str):
    return mlflow_registry.resolve(model_name, mlflow_registry.CHAMPION)
