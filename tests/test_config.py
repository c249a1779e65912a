import pytest
from pydantic import ValidationError

from embedfactory.config import Endpoint, SynthConfig, SynthParams
from embedfactory.pipeline import default_run_id


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
