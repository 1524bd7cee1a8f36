"""Reading the labeling config: which Choices tag to fill, and model classes -> choice values."""

import pytest

from integrations.labelstudio.label_config import (
    ChoicesTarget,
    LabelConfigError,
    empty_result,
    map_classes,
    parse_choices_target,
    prediction_result,
)

SIMPLE = """
<View>
  <Image name="image" value="$image" zoom="true"/>
  <Choices name="label" toName="image" choice="single-radio">
    <Choice value="ok"/>
    <Choice value="defect"/>
  </Choices>
</View>"""


def test_simple_config():
    target = parse_choices_target(SIMPLE)
    assert target == ChoicesTarget(from_name="label", to_name="image", image_value_key="image", choices=["ok", "defect"])


def test_other_names_nested_views_headers_and_aliases():
    config = """
    <View>
      <Header value="Inspect"/>
      <View style="display:flex">
        <Image name="img" value="$photo_url"/>
        <TextArea name="notes" toName="img"/>
      </View>
      <Choices name="verdict" toName="img">
        <View><Choice value="Good part" alias="Good"/></View>
        <Choice value="Scratched"/>
      </Choices>
    </View>"""
    target = parse_choices_target(config)
    assert (target.from_name, target.to_name, target.image_value_key) == ("verdict", "img", "photo_url")
    assert target.choices == ["Good", "Scratched"]  # Label Studio stores the alias when one is set


def test_choices_bound_to_text_are_ignored_and_multi_toname_works():
    config = """
    <View>
      <Text name="caption" value="$text"/>
      <Choices name="sentiment" toName="caption"><Choice value="pos"/></Choices>
      <Image name="image" value="$image"/>
      <Choices name="quality" toName="caption,image"><Choice value="OK"/><Choice value="NG"/></Choices>
    </View>"""
    target = parse_choices_target(config)
    assert (target.from_name, target.to_name, target.choices) == ("quality", "image", ["OK", "NG"])


TWO = """
<View>
  <Image name="image" value="$image"/>
  <Choices name="quality" toName="image"><Choice value="ok"/><Choice value="defect"/></Choices>
  <Choices name="lighting" toName="image"><Choice value="dark"/><Choice value="bright"/></Choices>
</View>"""


def test_several_choices_need_a_from_name():
    with pytest.raises(LabelConfigError, match="several <Choices> tags.*'quality'.*'lighting'.*from_name"):
        parse_choices_target(TWO)
    assert parse_choices_target(TWO, from_name="quality").choices == ["ok", "defect"]
    with pytest.raises(LabelConfigError, match="no <Choices name='nope'>"):
        parse_choices_target(TWO, from_name="nope")


@pytest.mark.parametrize("config, message", [
    ("", "empty"),
    ("<View><Image name='a'", "not valid XML"),
    ("<View><Text name='t' value='$t'/><Choices name='c' toName='t'><Choice value='x'/></Choices></View>",
     "no <Image> tag"),
    ("<View><Image name='image' value='$image'/></View>", "no <Choices> tag.*toName=\"image\""),
    ("<View><Image name='image' value='$image'/><Text name='t' value='$t'/>"
     "<Choices name='c' toName='t'><Choice value='x'/></Choices></View>", "no <Choices> tag is bound to an <Image>"),
    ("<View><Image name='image' value='$image'/><Choices name='c' toName='image' value='$opts'/></View>",
     "lists no <Choice>"),
    ("<View><Image name='image' value='http://x/a.png'/><Choices name='c' toName='image'><Choice value='ok'/>"
     "</Choices></View>", "must name a task data field"),
])
def test_configs_that_cannot_be_served(config, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_choices_target(config)


def test_exact_match_is_case_insensitive():
    assert map_classes(["ok", "defect"], ["OK", "Defect"]) == {"ok": "OK", "defect": "Defect"}


@pytest.mark.parametrize("choices", [["Normal", "Defective"], ["good", "bad"], ["No defect", "NG"], ["Pass", "FAIL"]])
def test_synonyms(choices):
    assert map_classes(["ok", "defect"], choices) == {"ok": choices[0], "defect": choices[1]}


def test_synonym_of_a_class_name_that_is_itself_a_synonym():
    assert map_classes(["good", "bad"], ["OK", "Defect"]) == {"good": "OK", "bad": "Defect"}


def test_explicit_mapping_wins():
    mapping = map_classes(["ok", "defect"], ["ok", "Scratch", "defect"], {"defect": "scratch"})
    assert mapping == {"ok": "ok", "defect": "Scratch"}


def test_mapping_errors():
    with pytest.raises(LabelConfigError, match="'defect' matches none of the choices.*ALLOOP_LABEL_MAP"):
        map_classes(["ok", "defect"], ["ok", "Scratch"])
    with pytest.raises(LabelConfigError, match="could be any of"):
        map_classes(["ok", "defect"], ["Normal", "Good", "Bad"])
    with pytest.raises(LabelConfigError, match="not a choice"):
        map_classes(["ok", "defect"], ["ok", "defect"], {"defect": "Scratch"})
    with pytest.raises(LabelConfigError, match="both map to the choice"):
        map_classes(["ok", "defect"], ["ok", "defect"], {"defect": "ok"})


def test_prediction_result_shape():
    target = parse_choices_target(SIMPLE)
    assert prediction_result(target, "defect", 0.75, "m/3") == {
        "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["defect"]}}],
        "score": 0.75,
        "model_version": "m/3",
    }
    assert empty_result("m/3") == {"result": [], "score": 0, "model_version": "m/3"}
