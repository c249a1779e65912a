"""Pre-flight: every problem a run would meet, listed in one error before any model call, each
naming the parameter and the fix; a good configuration passes."""
import pytest

from embedfactory import preflight
from embedfactory.config import SynthParams, TrainConfig


def test_every_problem_at_once_each_naming_its_parameter(tmp_path, monkeypatch):
    monkeypatch.delenv("FACTORY_PAID_KEY", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no Hub lookups here: names that would need one pass
    blocker = tmp_path / "file"
    blocker.write_text("x")
    broken = tmp_path / "personas.jsonl"
    broken.write_text("")
    params = SynthParams(
        store=str(blocker / "store"),
        generator={"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini", "api_key_env": "FACTORY_PAID_KEY"},
        synth={"persona_source": str(tmp_path / "missing.txt")},
        filter={"model": "embedded:all-MiniLM-L6-v3"},
        train=TrainConfig(base_model=str(tmp_path / "no-such-model"), guide_model="mpnet", eval_sets=["nope"]))
    with pytest.raises(preflight.PreflightError) as failed:
        preflight.check(params)
    text = str(failed.value)
    assert text.startswith("7 problem(s) before any model call:\n")
    for expected in ("- store: store ", "- synth.persona_source: ", "- train.eval_sets: ",
                     "- filter.model: 'embedded:all-MiniLM-L6-v3' is not an embedded model; embedded: "
                     "embedded:all-MiniLM-L6-v2, embedded:all-mpnet-base-v2",
                     f"- train.base_model: '{tmp_path}/no-such-model' is neither a folder that exists nor a Hub id",
                     "- train.guide_model: 'mpnet' is neither a folder that exists nor a Hub id (owner/name)",
                     "- generator: $FACTORY_PAID_KEY is not set for https://api.openai.com/v1"):
        assert expected in text, expected


def test_a_good_configuration_passes_and_local_servers_need_no_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = tmp_path / "my-model"
    model.mkdir()
    params = SynthParams(store=str(tmp_path / "store"), generator={"base_url": "http://gpu-1:8000/v1", "model": "m"},
                         train=TrainConfig(base_model=str(model), guide_model="BAAI/bge-small-en-v1.5"))
    assert preflight.problems(params) == []
    assert preflight.problems(SynthParams(store=str(tmp_path / "s2"))) == []  # the embedded defaults
