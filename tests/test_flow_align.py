"""Flow `align` end to end with the real embedded teacher (llama.cpp, Qwen2.5-0.5B) and, for speed, a
tiny random-initialised Qwen2 as the base model (plumbing only: no quality is claimed from it).
A re-run reuses every stage: no new shard, no retraining; a GGUF export of the same models is served
by llama.cpp."""
import json
from pathlib import Path

import pytest
from gguf import GGUFReader
from openai import OpenAI

from embedfactory.align.config import AlignParams
from counting_proxy import CountingProxy
from embedfactory.config import SynthConfig
from embedfactory.llm.server import LlamaServer
from flows.align import align

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from embedfactory.models import local_gguf

    import torch

    torch.manual_seed(0)  # the same random weights every run: the same junior answers for the teacher to judge
    folder = tmp_path_factory.mktemp("tiny-qwen")
    tokenizer = AutoTokenizer.from_pretrained(local_gguf().parent, gguf_file=local_gguf().name)  # Qwen's own
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 tie_word_embeddings=True)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def shard_tokens(store, run_id) -> set[str]:
    return {json.loads(p.read_text())["run_token"] for p in (store / "runs" / run_id).glob("*/_shards/*.json")}


def test_align_makes_registered_junior_senior_and_revisor_then_reuses_them(tmp_path, prefect_api, llm_server,
                                                                           tiny_qwen):
    endpoint, url = llm_server
    proxy = CountingProxy(url).__enter__()  # counts what the teacher actually answered
    steps = {"steps": 2, "batch_size": 2, "max_length": 256}
    params = AlignParams(store=str(tmp_path), run_id="align-test", base_model=tiny_qwen,
                         # no client timeout on a busy machine: a timed-out request the server still
                         # answers would be counted by the proxy and not by the report
                         teacher=endpoint.model_copy(update={"base_url": proxy.base_url, "timeout_s": 3000.0}),
                         seed_set=SynthConfig(personas=6, tasks_per_persona=1, examples_per_task=1,
                                              task_mix={"retrieval": 1}, max_num_words=30,
                                              sampling={"max_tokens": 768}),  # the CPU server by URL
                         candidates=3, max_new_tokens=24, junior=steps, senior=steps,
                         revisor={**steps, "max_length": 1024},  # its prompt holds the task and the answer
                         held_out=0.75,  # most prompts judged: the 0.5B teacher fails some seeds, judgments and revisions
                         planned_examples=1000)
    first = align(params)

    for role in ("junior", "senior", "revisor"):
        report = first["models"][role]
        assert (tmp_path / "models" / "align" / "align-test" / role / "config.json").exists()
        assert report["steps"] == 2 and report["moved_tensors"] == report["trainable_tensors"] > 0
        assert first["registry"][f"aligned-{role}"]["serve"].startswith(f"vllm serve {report['path']}")
    assert first["models"]["senior"]["beta"] == 0.1 and "rewards/margins" in first["models"]["senior"]["log"][0]
    assert first["models"]["senior"]["base"] == first["models"]["junior"]["path"]  # DPO starts from the junior

    calls = {row["stage"]: row for row in first["teacher_calls"]}
    assert all(calls[s]["teacher_calls"] > 0 for s in ("personas", "tasks", "examples", "preferences", "judged"))
    total = calls["total"]
    assert total["teacher_calls"] == proxy.completions  # the report counts every reply the teacher gave
    assert total["calls_per_planned_example"] == round(proxy.completions / 1000, 6)
    assert total["speed_calls_per_example"] == round(45_000 / 920_000, 6)  # SPEED's 45K calls for 920K examples
    preferences = json.loads((tmp_path / "runs" / "align-test" / "align_report.json").read_text())
    assert preferences["models"]["junior"]["rows"] > 0

    tokens, asked = shard_tokens(tmp_path, "align-test"), proxy.completions
    second = align(params)
    assert shard_tokens(tmp_path, "align-test") == tokens  # nothing regenerated
    assert second["models"] == first["models"]  # nothing retrained (same markers)
    assert proxy.completions == asked  # and the teacher was not asked again

    exported = align(params.model_copy(update={"gguf": "f16"}))  # the same models, also as GGUF
    assert exported["models"] == first["models"] and proxy.completions == asked
    for role in ("junior", "senior", "revisor"):
        entry = exported["registry"][f"aligned-{role}"]
        assert entry["gguf"] == str(tmp_path / "models" / "align" / "align-test" / "gguf" / f"{role}-f16.gguf")
        fields = GGUFReader(entry["gguf"]).fields  # the tiny trained model, not the shipped 0.5B one
        assert bytes(fields["general.architecture"].parts[-1]).decode() == "qwen2"
        assert int(fields["qwen2.block_count"].parts[-1][0]) == 2
        assert int(fields["qwen2.embedding_length"].parts[-1][0]) == 64
    made = Path(exported["registry"]["aligned-senior"]["gguf"]).stat().st_mtime_ns
    assert align(params.model_copy(update={"gguf": "f16"}))["registry"] == exported["registry"]
    assert Path(exported["registry"]["aligned-senior"]["gguf"]).stat().st_mtime_ns == made  # not converted again
    with LlamaServer(Path(exported["registry"]["aligned-senior"]["gguf"]), alias="aligned-senior", slots=1) as served:
        reply = OpenAI(base_url=served.base_url, api_key="none").chat.completions.create(
            model="aligned-senior", messages=[{"role": "user", "content": "Write a query."}], max_tokens=4)
        assert reply.usage.completion_tokens > 0  # llama.cpp serves the exported senior
    proxy.__exit__()
