"""The champion's one mapping between model output and Label Studio results."""

import pytest

from integrations.labelstudio.label_config import ChoicesTarget, LabelConfigError
from integrations.labelstudio.tasks import Prediction
from mlproject.serving.champion import Champion, no_champion_message

TARGET = ChoicesTarget("verdict", "img", "image", ["Good", "Defective"])


def champion(threshold=0.3):
    return Champion("m/3", None, ("ok", "defect"), threshold)


def test_labels_follow_the_models_threshold_and_the_score_is_the_chosen_class_probability():
    c = champion(0.3)
    assert c.label_of(0.31) == "defect" and c.label_of(0.29) == "ok"
    assert c.confidence_of("defect", 0.31) == pytest.approx(0.31)
    assert c.confidence_of("ok", 0.29) == pytest.approx(0.71)


@pytest.mark.parametrize("p_defect", [0.05, 0.29, 0.3, 0.8])
def test_a_stored_prediction_gives_back_the_p_defect_it_was_made_from(p_defect):
    choices = champion(0.3).choices_for(TARGET, {"ok": "Good", "defect": "Defective"})
    result = choices.result_for(p_defect)
    assert result["model_version"] == "m/3"
    stored = Prediction(1, 1, "m/3", result["score"], tuple(result["result"][0]["value"]["choices"]))
    assert choices.p_defect_of(stored) == pytest.approx(p_defect)
    assert choices.class_of_choices(stored.choices) == champion(0.3).label_of(p_defect)


def test_classes_the_labeling_config_cannot_show_are_refused():
    with pytest.raises(LabelConfigError):
        champion().choices_for(ChoicesTarget("verdict", "img", "image", ["Cat", "Dog", "Bird"]))


def test_the_no_champion_advice_says_how_to_make_one():
    message = no_champion_message("parts", "sqlite:///x.db")
    assert "'parts' has no champion in sqlite:///x.db" in message
    assert "mlflow run . -e finetune" in message and "mlflow run . -e promote" in message


def test_the_champions_variant_comes_from_its_model_config():
    class Model:
        config = {"variant": "frozen", "threshold": 0.5}

    assert Champion("m/1", Model(), ("ok", "defect"), 0.5).variant == "frozen"
    assert champion().variant is None


def test_the_no_champion_advice_never_shows_a_password():
    message = no_champion_message("parts", "https://ml:s3cret@mlflow.example.com")
    assert "s3cret" not in message and "mlflow.example.com" in message
