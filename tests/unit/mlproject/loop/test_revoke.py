"""Which machine labels a new champion takes back (pure part; the writes are in the sync tests)."""

from integrations.labelstudio.label_config import ChoicesTarget
from integrations.labelstudio.tasks import Annotation, Prediction, Task
from mlproject.loop.policy import PolicyConfig
from mlproject.loop.revoke import contradicted
from mlproject.serving.champion import Champion

BOT = 7
TARGET = ChoicesTarget("verdict", "img", "image", ["Good", "Bad"])
CHOICES = Champion("m/2", None, ("ok", "defect"), 0.5).choices_for(TARGET, {"ok": "Good", "defect": "Bad"})


def task(machine_choice, predicted, score, *, human=None):
    annotations = [Annotation(1, 1, BOT, (machine_choice,), False, None, "x")]
    if human is not None:
        annotations.append(Annotation(2, 1, 5, (human,) if human else (), human == "", None, "y"))
    return Task(1, {}, annotations, [Prediction(10, 1, "m/2", score, (predicted,))])


def test_a_confident_other_class_contradicts_a_machine_label():
    why = contradicted(task("Good", "Bad", 0.97), CHOICES, BOT, PolicyConfig(tau=0.95))
    assert why is not None and "'ok' contradicted by m/2 ('defect', 0.970)" in why


def test_agreement_or_low_confidence_or_a_persons_touch_keeps_the_label():
    policy = PolicyConfig(tau=0.95)
    assert contradicted(task("Bad", "Bad", 0.99), CHOICES, BOT, policy) is None
    assert contradicted(task("Good", "Bad", 0.90), CHOICES, BOT, policy) is None
    assert contradicted(task("Good", "Bad", 0.99, human="Good"), CHOICES, BOT, policy) is None
    assert contradicted(task("Good", "Bad", 0.99, human=""), CHOICES, BOT, policy) is None  # even a skip


def test_a_per_class_threshold_decides_for_its_class():
    policy = PolicyConfig(tau=0.95, class_tau={"defect": 0.8})
    assert contradicted(task("Good", "Bad", 0.85), CHOICES, BOT, policy) is not None
