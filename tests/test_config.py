import pytest
from pydantic import ValidationError

from embedfactory.config import Endpoint, SynthConfig, SynthParams, TrainConfig
from embedfactory.synth.pipeline import default_run_id


@pytest.mark.parametrize("field,value", [
    ("personas", 0), ("personas", -3), ("tasks_per_persona", 0), ("examples_per_task", -1),
    ("task_mix", {"retrieval": 1, "poetry": 1}), ("task_mix", {}), ("task_mix", {"sts": -1, "retrieval": 2}),
    ("task_mix", {"sts": 0}), ("languages", []), ("max_attempts", 0),
])
def test_bad_sizes_and_task_types_are_rejected_with_the_field_named(field, value):
    with pytest.raises(ValidationError) as err:
        SynthConfig(**{field: value})
    assert field in str(err.value)


def test_unknown_fields_are_rejected():
    with pytest.raises(ValidationError, match="personaz"):
        SynthConfig(personaz=3)


def test_run_id_must_be_a_safe_folder_name():
    with pytest.raises(ValidationError, match="run_id"):
        SynthParams(run_id="../escape")


def test_fingerprint_ignores_runtime_knobs_but_not_the_model():
    base = Endpoint()
    assert base.fingerprint_fields() == Endpoint(concurrency=64, timeout_s=5).fingerprint_fields()
    assert base.fingerprint_fields() != Endpoint(model="other").fingerprint_fields()
    remote = Endpoint(base_url="http://gpu-7:8000/v1")
    assert remote.fingerprint_fields() == Endpoint(base_url="http://gpu-9:8000/v1").fingerprint_fields()
    # the URL itself never counts; what is sent does: the embedded server's sampling defaults
    same = {"repeat_penalty": 1.1}
    assert Endpoint(extra_sampling=same).fingerprint_fields() == Endpoint(
        base_url="http://gpu-7:8000/v1", extra_sampling=same).fingerprint_fields()
    assert base.fingerprint_fields() != remote.fingerprint_fields()


def test_default_run_id_is_stable_and_follows_what_shapes_the_data():
    a = SynthParams(store="/tmp/a")
    assert default_run_id(a) == default_run_id(SynthParams(store="/tmp/b"))
    assert default_run_id(a) == default_run_id(
        SynthParams(generator=Endpoint(concurrency=2)))
    assert default_run_id(a) != default_run_id(SynthParams(synth=SynthConfig(personas=5)))


@pytest.mark.parametrize("template, message", [
    ("Query: {query} (answer briefly)", "must end with {query}"),
    ("{instruction}: {query} {query}", "must end with {query}, once"),
    ("{instruction}", "must end with {query}"),
    ("Task {task}: {query}", "placeholders {task}"),
    ("{0} {query}", "placeholders {0}"),
    ("{instruction!r}: {query}", "without format specs"),
    ("Instruct: {instruction\nQuery: {query}", "not a format string"),
])
def test_query_templates_that_cannot_become_a_query_prompt_are_rejected(template, message):
    with pytest.raises(ValidationError, match="query_template") as err:
        TrainConfig(query_template=template)
    assert message in str(err.value)


def test_the_query_prompt_is_the_template_up_to_the_query_with_the_eval_instruction():
    e5 = TrainConfig(query_template="Instruct: {instruction}\nQuery: {query}")
    assert e5.query_prompt() == "Instruct: Given a question, retrieve passages that answer it\nQuery: "
    assert TrainConfig().query_prompt() == ""
    custom = TrainConfig(query_template="[{instruction}] {{literal}} {query}", eval_instruction="find docs")
    assert custom.query_prompt() == "[find docs] {literal} "


def test_a_guide_model_selects_gist_and_each_loss_needs_its_model():
    assert TrainConfig().loss == "infonce"
    assert TrainConfig(guide_model="g").loss == "gist"
    assert TrainConfig(guide_model="g", loss="infonce").loss == "gist"  # a form's default beside a guide
    again = TrainConfig(guide_model="g")
    assert TrainConfig(**again.model_dump()) == again
    assert TrainConfig(loss="margin_mse", teacher_model="t").teacher_model == "t"
    for kwargs, message in [({"loss": "gist"}, "loss 'gist' needs guide_model"),
                            ({"loss": "margin_mse"}, "needs teacher_model"),
                            ({"teacher_model": "t"}, "teacher_model is only used by the distilling losses"),
                            ({"loss": "margin_mse", "teacher_model": "t", "guide_model": "g"},
                             "guide_model is only used by loss 'gist'")]:
        with pytest.raises(ValidationError, match=message):
            TrainConfig(**kwargs)
