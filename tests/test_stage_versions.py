"""One stage shape: each stage declares its version, reads and config slice; its shards' fingerprints
rest on those alone, and a change to the code that makes a stage's rows cannot land unnoticed."""
import dataclasses
import inspect

import pytest

from embedfactory import schemas, task_types
from embedfactory.config import SynthParams
from embedfactory.filter import consistency, dedupe, gates, search
from embedfactory.ids import stable_hash
from embedfactory.llm import client
from embedfactory.synth import (
    brainstorm,
    common,
    documents,
    duplicates,
    generate,
    grounded,
    personas,
    pipeline,
    revise,
    sources,
    verdicts,
)

LLM = (schemas, task_types, client, common)  # what every LLM stage's rows also depend on
# The code that makes each stage's rows. A review aid, not a cache key: the fingerprint holds the
# stage's version, so a change here asks for a decision (bump the version, or re-pin a pure move).
WATCHED = {
    "personas": (pipeline._personas, personas, sources, gates, *LLM),
    "tasks": (pipeline._tasks, brainstorm, sources, *LLM),
    "examples": (pipeline._examples, generate, *LLM),
    "revised": (pipeline._revised, revise, gates, *LLM),
    "grounded": (pipeline._grounded, grounded, documents, *LLM),
    "corpus": (verdicts.corpus_shard, verdicts.encoder, consistency.grouped_corpus_of, consistency.encoder,
               sources, documents.passages, documents.load_documents, schemas),
    "verdicts": (verdicts.verdict_shard, verdicts.gate_reasons, verdicts._originals, verdicts._corpus_matrix,
                 consistency, search, gates, duplicates.reasons, schemas),
    "duplicates": (dedupe, duplicates.find, duplicates._check_shard, duplicates._add, duplicates._signature_table,
                   schemas),
}
PINNED = {  # stage: (version, code hash)
    "personas": (1, "94123523e0b3"),
    "tasks": (1, "f5a75a1f804b"),
    "examples": (1, "bd10df23bafb"),
    "revised": (1, "c13a24eb4a7a"),
    "grounded": (1, "aef47ec8b244"),
    "corpus": (1, "05e5d5bfde82"),
    "verdicts": (1, "edc5a169e3de"),
    "duplicates": (1, "d4fe667e4e42"),
}


def versions() -> dict[str, int]:
    return {**{s.name: s.version for s in pipeline.SYNTH_STAGES}, duplicates.STAGE: duplicates.VERSION}


def test_every_stage_is_watched_and_its_code_is_pinned_to_its_version():
    assert set(WATCHED) == set(versions()) == set(PINNED)
    now = {name: (versions()[name], stable_hash(*(inspect.getsource(m) for m in WATCHED[name]), length=12))
           for name in WATCHED}
    changed = {name: pin for name, pin in now.items() if pin != PINNED[name]}
    assert not changed, (
        "the code that makes these stages' rows changed. Where the rows can change, bump the stage's "
        "version (synth/pipeline.py, or VERSION in synth/duplicates.py) so stores make them again; then "
        f"pin what this prints in tests/test_stage_versions.py PINNED: {changed}")


def test_a_fingerprint_rests_on_the_stages_version_and_config_slice_alone(tmp_path):
    ctx = pipeline.RunContext(params=SynthParams(store=str(tmp_path)), run_id="r", run_token="t",
                              generator_url="u", revisor_url="u", generator=SynthParams().generator,
                              revisor=SynthParams().generator)

    def fp(stage, **changes):
        params = ctx.params.model_copy(update=changes)
        return pipeline.fingerprint(stage, ctx.model_copy(update={"params": params}), "00000", [])

    base = {s.name: fp(s) for s in pipeline.SYNTH_STAGES}
    topk = SynthParams(filter={"topk": 3}).filter
    assert fp(pipeline.VERDICTS, filter=topk) != base["verdicts"]  # in its slice
    assert fp(pipeline.EXAMPLES, filter=topk) == base["examples"]  # not in its slice
    assert fp(pipeline.CORPUS, filter=topk) == base["corpus"]  # the corpus is embedded once whatever top-k is
    device = SynthParams(filter={"device": "cpu", "batch_size": 7}).filter
    assert fp(pipeline.CORPUS, filter=device) == base["corpus"]  # runtime knobs
    assert fp(pipeline.VERDICTS, filter=device) == base["verdicts"]
    more = SynthParams(synth={"examples_per_task": 9}).synth
    assert fp(pipeline.EXAMPLES, synth=more) != base["examples"] and fp(pipeline.TASKS, synth=more) == base["tasks"]
    bumped = dataclasses.replace(pipeline.EXAMPLES, version=pipeline.EXAMPLES.version + 1)
    assert fp(bumped) != base["examples"]


def test_a_sources_content_enters_the_fingerprint_not_its_path(tmp_path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("A beekeeper in Crete\nA tram driver in Lisbon\n")
    def slice_of(name: str) -> dict:
        params = SynthParams(synth={"persona_source": str(tmp_path / name)})
        return pipeline.fingerprint_view(pipeline.PERSONAS.config(params))

    view = [slice_of("a.txt"), slice_of("b.txt")]
    assert view[0] == view[1] and view[0]["source"] == sources.source_version(str(tmp_path / "a.txt"))
    (tmp_path / "b.txt").write_text("A lighthouse keeper\n")
    assert pipeline.fingerprint_view(pipeline.PERSONAS.config(
        SynthParams(synth={"persona_source": str(tmp_path / "b.txt")})))["source"] != view[0]["source"]


def test_the_registry_holds_each_stages_reads_against_its_upstreams_schema():
    assert pipeline.check_stages(pipeline.SYNTH_STAGES) == pipeline.SYNTH_STAGES
    # the duplicates stage walks the revised and grounded shards in order (its own shape: one index)
    assert set(duplicates.READS) <= set(pipeline.REVISED.schema.names) == set(pipeline.GROUNDED.schema.names)
    wrong = dataclasses.replace(pipeline.EXAMPLES, reads=("task_id", "passage"))
    with pytest.raises(ValueError, match=r"'examples' reads \['passage'\], which are not in the schema of 'tasks'"):
        pipeline.check_stages([pipeline.PERSONAS, pipeline.TASKS, wrong])
    narrow = dataclasses.replace(pipeline.REVISED, schema=schemas.TASKS)  # carries examples on, drops columns
    with pytest.raises(ValueError, match="'revised' writes another schema than schemas.STAGE_SCHEMAS"):
        pipeline.check_stages([pipeline.PERSONAS, pipeline.TASKS, pipeline.EXAMPLES, narrow])
    wide = dataclasses.replace(pipeline.EXAMPLES, reads=pipeline.EVERY_COLUMN)  # tasks rows carried on whole?
    with pytest.raises(ValueError, match=r"'examples' reads \['persona'.*which are not in its own schema"):
        pipeline.check_stages([pipeline.PERSONAS, pipeline.TASKS, wide])
    with pytest.raises(ValueError, match="unknown upstream 'tasks'"):
        pipeline.check_stages([pipeline.EXAMPLES])
    with pytest.raises(ValueError, match="names repeat"):
        pipeline.check_stages([pipeline.PERSONAS, pipeline.PERSONAS])
