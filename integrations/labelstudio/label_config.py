"""What the ML backend answers with, read from a Label Studio labeling config (pure: no I/O).

The backend classifies whole images, so it needs one ``<Choices>`` tag whose ``toName`` is an
``<Image>`` tag. :func:`parse_choices_target` finds it; :func:`map_classes` maps the model's class
names (e.g. ``ok``/``defect``) onto that tag's choice values; :func:`prediction_result` builds the
prediction Label Studio stores.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Mapping, Sequence

#: Model class name -> choice values that mean the same (compared case-insensitively).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "ok": ("ok", "normal", "good", "no defect", "pass"),
    "defect": ("defect", "defective", "ng", "bad", "fail"),
}


class LabelConfigError(ValueError):
    """The labeling config cannot be served; the message says what is wrong and what to change."""


@dataclass(frozen=True)
class ChoicesTarget:
    """The ``<Choices>`` tag predictions go to and the ``<Image>`` tag it labels."""

    from_name: str
    to_name: str
    image_value_key: str  # the task data key holding the image URL (the Image's value without '$')
    choices: list[str] = field(default_factory=list)


def _local(tag: str) -> str:
    """Tag name without an XML namespace, lower-cased (Label Studio's tag names are case-insensitive)."""
    return tag.rsplit("}", 1)[-1].lower()


def _choice_values(choices_el: ET.Element) -> list[str]:
    """The values a prediction may name: a Choice's ``alias`` if set (Label Studio stores that), else ``value``."""
    values = []
    for el in choices_el.iter():
        if el is choices_el or _local(el.tag) != "choice":
            continue
        value = el.get("alias") or el.get("value")
        if value:
            values.append(value)
    return values


def parse_choices_target(label_config: str, from_name: str | None = None) -> ChoicesTarget:
    """The one ``<Choices>`` tag bound to an ``<Image>`` tag (or the one named ``from_name``)."""
    if not label_config or not str(label_config).strip():
        raise LabelConfigError("the labeling config is empty; the project needs an <Image> and a <Choices> tag")
    try:
        root = ET.fromstring(str(label_config))
    except ET.ParseError as exc:
        raise LabelConfigError(f"the labeling config is not valid XML ({exc}); fix it in the project's settings") from None

    images = {el.get("name"): el for el in root.iter() if _local(el.tag) == "image" and el.get("name")}
    all_choices = [el for el in root.iter() if _local(el.tag) == "choices"]
    if not images:
        raise LabelConfigError(
            "the labeling config has no <Image> tag; this backend classifies images: add "
            '<Image name="image" value="$image"/> and a <Choices toName="image"> tag'
        )
    if not all_choices:
        raise LabelConfigError(
            f"the labeling config has no <Choices> tag; add one bound to the image, e.g. "
            f'<Choices name="label" toName="{next(iter(images))}"><Choice value="ok"/><Choice value="defect"/></Choices>'
        )

    def image_of(el: ET.Element) -> str | None:
        targets = [t.strip() for t in (el.get("toName") or el.get("toname") or "").split(",") if t.strip()]
        return next((t for t in targets if t in images), None)

    bound = [el for el in all_choices if image_of(el)]
    if from_name is not None:
        named = [el for el in all_choices if el.get("name") == from_name]
        if not named:
            names = ", ".join(repr(el.get("name")) for el in all_choices)
            raise LabelConfigError(f"the labeling config has no <Choices name={from_name!r}> (it has {names}); "
                                   "change the backend's from_name setting (ALLOOP_CHOICES_FROM_NAME)")
        if not image_of(named[0]):
            raise LabelConfigError(f"<Choices name={from_name!r}> is not bound to an <Image> tag (toName="
                                   f"{named[0].get('toName')!r}); set its toName to one of {sorted(images)}")
        chosen = named[0]
    elif not bound:
        raise LabelConfigError(
            f"no <Choices> tag is bound to an <Image> tag (images: {sorted(images)}); "
            "set the Choices tag's toName to the Image tag's name"
        )
    elif len(bound) > 1:
        names = ", ".join(repr(el.get("name")) for el in bound)
        raise LabelConfigError(
            f"several <Choices> tags label the image ({names}) and the backend cannot tell which one to fill; "
            "name one with the backend's from_name setting (--from-name / ALLOOP_CHOICES_FROM_NAME)"
        )
    else:
        chosen = bound[0]

    to_name = image_of(chosen)
    value = (images[to_name].get("value") or "").strip()
    if not value.startswith("$") or len(value) < 2:
        raise LabelConfigError(
            f"<Image name={to_name!r}> has value={value!r}; it must name a task data field, e.g. value=\"$image\""
        )
    choices = _choice_values(chosen)
    if not choices:
        raise LabelConfigError(
            f"<Choices name={chosen.get('name')!r}> lists no <Choice> values (dynamic choices are not supported); "
            "add one <Choice value=...> per class"
        )
    return ChoicesTarget(from_name=chosen.get("name") or "", to_name=to_name, image_value_key=value[1:],
                         choices=choices)


def map_classes(class_names: Sequence[str], choices: Sequence[str],
                mapping: Mapping[str, str] | None = None) -> dict[str, str]:
    """Model class name -> choice value.

    Per class: an explicit ``mapping`` entry wins, then a case-insensitive exact match, then the
    :data:`SYNONYMS` table. Raises :class:`LabelConfigError` when a class has no choice, when the
    synonyms are ambiguous, or when two classes would land on the same choice.
    """
    by_lower: dict[str, list[str]] = {}
    for choice in choices:
        by_lower.setdefault(choice.strip().lower(), []).append(choice)
    explicit = {str(k).strip().lower(): v for k, v in (mapping or {}).items()}
    result: dict[str, str] = {}
    for name in class_names:
        key = str(name).strip().lower()
        if key in explicit:
            wanted = explicit[key]
            found = by_lower.get(str(wanted).strip().lower())
            if not found:
                raise LabelConfigError(f"the label mapping sends class {name!r} to {wanted!r}, which is not a choice "
                                       f"of the labeling config ({list(choices)}); fix the mapping (ALLOOP_LABEL_MAP)")
            result[name] = found[0]
            continue
        if key in by_lower:
            result[name] = by_lower[key][0]
            continue
        group: list[str] = []
        for canonical, words in SYNONYMS.items():
            if key == canonical or key in words:
                group = [canonical, *words]
                break
        matches = []
        for word in group:
            for choice in by_lower.get(word, []):
                if choice not in matches:
                    matches.append(choice)
        if len(matches) == 1:
            result[name] = matches[0]
        elif len(matches) > 1:
            raise LabelConfigError(
                f"model class {name!r} could be any of the choices {matches}; say which with an explicit mapping "
                f"(ALLOOP_LABEL_MAP='{name}=<choice>')"
            )
        else:
            raise LabelConfigError(
                f"model class {name!r} matches none of the choices {list(choices)}; add <Choice value=\"{name}\"/> "
                f"to the labeling config or map it explicitly (ALLOOP_LABEL_MAP='{name}=<choice>')"
            )
    taken: dict[str, str] = {}
    for name, choice in result.items():
        if choice in taken:
            raise LabelConfigError(f"model classes {taken[choice]!r} and {name!r} both map to the choice {choice!r}; "
                                   "give each class its own choice (ALLOOP_LABEL_MAP)")
        taken[choice] = name
    return result


def prediction_result(target: ChoicesTarget, choice: str, score: float, model_version: str) -> dict:
    """One task's prediction as the ML backend protocol returns it."""
    return {
        "result": [
            {
                "from_name": target.from_name,
                "to_name": target.to_name,
                "type": "choices",
                "value": {"choices": [choice]},
            }
        ],
        "score": float(score),
        "model_version": str(model_version),
    }


def empty_result(model_version: str) -> dict:
    """The placeholder for a task the backend could not predict (the server needs one result per task)."""
    return {"result": [], "score": 0, "model_version": str(model_version)}
