"""Grounded synthesis: the user's documents read and split, queries written for them by the real
embedded model through the real `synth` flow, gated and filtered by round trip against the corpus."""
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from embedfactory.config import EMBEDDED_MAX_TOKENS, SynthParams
from embedfactory.eval.paired import SHARED_DATA
from embedfactory.synth import documents
from embedfactory.synth.pipeline import grounded_chunks, grounded_passages, persona_chunks

DOCS = [
    {"id": "bread", "title": "Sourdough", "text": "Sourdough bread is leavened by wild yeasts and lactic acid "
     "bacteria kept in a starter. It rises more slowly than bread made with baker's yeast, and the acids "
     "give it a sour taste and a longer shelf life."},
    {"id": "tides", "title": "Tides", "text": "Tides are caused by the gravitational pull of the Moon and the "
     "Sun on the oceans. Spring tides, the largest, occur when the Sun and Moon are aligned at new and full moon."},
    {"id": "volcano", "title": "Volcanoes", "text": "A volcano erupts when pressure from gases dissolved in "
     "magma exceeds the strength of the rock above. Basaltic magma is runny and erupts gently; silica-rich "
     "magma is sticky and traps gas, which makes explosive eruptions."},
    {"id": "bees", "title": "Honey bees", "text": "Honey bees tell their hive mates where flowers are with a "
     "waggle dance: the angle of the run shows the direction relative to the Sun and its length the distance."},
]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_documents_from_jsonl_beir_and_cranfield(tmp_path):
    docs = documents.load_documents(write_jsonl(tmp_path / "docs.jsonl", DOCS))
    assert [d.id for d in docs] == ["bread", "tides", "volcano", "bees"] and docs[0].title == "Sourdough"
    beir = tmp_path / "beir"
    beir.mkdir()
    write_jsonl(beir / "corpus.jsonl", [{"_id": d["id"], "title": d["title"], "text": d["text"]} for d in DOCS])
    assert documents.load_documents(str(beir)) == docs
    cranfield = documents.load_documents(str(SHARED_DATA / "cranfield"))
    assert len(cranfield) > 1300 and all(d.text for d in cranfield)


def test_bad_documents_fail_early_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(DOCS[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        documents.load_documents(str(bad))
    with pytest.raises(ValueError, match=r"row 1: needs `id`"):
        documents.load_documents(write_jsonl(tmp_path / "noid.jsonl", [{"text": "x"}]))
    with pytest.raises(ValueError, match="repeats an earlier row"):
        documents.load_documents(write_jsonl(tmp_path / "dup.jsonl", [DOCS[0], DOCS[0]]))


def test_long_documents_split_into_bounded_passages_that_keep_every_word():
    text = " ".join(f"Sentence number {i} says something about topic {i % 7}." for i in range(60))
    doc = documents.Document("long", "A title", text)
    parts = documents.split_passages(doc, 50)
    assert len(parts) > 1 and all(len(p.body.split()) <= 50 for p in parts)
    assert " ".join(p.body for p in parts).split() == text.split()
    assert all(p.body.endswith(".") for p in parts[:-1])  # cut at sentence ends
    assert [p.id for p in parts][:2] == ["long#0", "long#1"] and parts[0].text.startswith("A title ")
    assert documents.split_passages(documents.Document("short", "", "one two three"), 50)[0].id == "short"


def test_passage_sample_and_share(tmp_path):
    corpus = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    params = SynthParams(store=str(tmp_path), grounded={"corpus": corpus, "documents": 3})
    chosen = grounded_passages(params)
    assert len(chosen) == 3 and chosen == grounded_passages(params)  # reproducible
    assert persona_chunks(params) == [] and grounded_chunks(params) == ["g00000"]  # share 1: grounded only
    mixed = SynthParams(store=str(tmp_path), synth={"personas": 2, "tasks_per_persona": 1,
                                                                   "examples_per_task": 1},
                       grounded={"corpus": corpus, "share": 0.5})
    assert len(grounded_passages(mixed)) == 2 and persona_chunks(mixed) == ["00000"]


@pytest.mark.slow
def test_synth_with_a_corpus_writes_gated_round_trip_filtered_queries(tmp_path, prefect_api, llm_server):
    from flows.synth import synth

    endpoint, url = llm_server
    corpus = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    params = SynthParams(store=str(tmp_path / "store"), generator=endpoint.model_copy(update={"base_url": url}),
                         grounded={"corpus": corpus, "queries_per_passage": 2},
                         synth={"sampling": {"max_tokens": EMBEDDED_MAX_TOKENS}},  # the CPU server by URL
                         filter={"topk": 1, "mined_negatives": 1, "mine_range": (0, 3)}, train=None)
    result = synth(params)
    summary = {row["stage"]: row for row in result["summary"]}
    assert "tasks" not in summary and summary["grounded"]["rows_in"] == 4 and summary["grounded"]["llm_calls"] >= 8

    run_dir = Path(params.store) / "runs" / result["run_id"]
    verdicts = pq.read_table(run_dir / "verdicts").to_pylist()
    assert len(verdicts) == summary["grounded"]["rows_out"]
    by_id = {d["id"]: f"{d['title']} {d['text']}" for d in DOCS}
    for row in verdicts:
        assert row["positive"] == by_id[row["source_id"]] and row["negative"] is None
        assert row["rank"] >= 1 and row["kept"] == (row["drop_reason"] is None)
        if row["kept"]:
            assert row["rank"] == 1  # round trip with k = 1: its own passage comes back first
        elif row["drop_reason"].startswith("ranking"):
            assert row["rank"] > 1
    dataset = pq.read_table(Path(result["dataset"]["path"]) / "data" / "train-00000-of-00001.parquet").to_pylist()
    assert len(dataset) == sum(v["kept"] for v in verdicts)
    assert all(r["source_id"] in by_id and r["instruction"] == params.grounded.instruction for r in dataset)
    quality = result["dataset"]["quality"]
    assert quality["kept"] == len(dataset) and quality["rows"]["grounded"]["ok"] == len(verdicts)


def _row(prompt_name: str, task_type: str, task: str, attributes: dict, anchor: str, positive: str,
         negative=None, fields=None) -> dict:
    return {"prompt_name": prompt_name, "task_type": task_type, "task": task,
            "attributes": json.dumps(attributes), "anchor": anchor, "positive": positive,
            "negative": negative, "fields": json.dumps(fields or {})}


def test_verdict_gates_name_the_failure_of_real_embedded_model_outputs():
    """Queries the embedded model wrote for Cranfield passages (bench/quality.py), and the echoed
    retrieval query of the brief; a good query passes."""
    from embedfactory.synth.verdicts import gate_reasons

    passage = ("manoeuvring technique for changing the plane of circular orbits with minimum fuel "
               "expenditure . manoeuvring technique for changing the plane of circular orbits with minimum "
               "fuel expenditure . the problem of changing the orbital plane of a satellite is studied")
    asked = {"query_type": "long-tail", "query_length": "5 to 15 words", "clarity": "clear",
             "difficulty": "college", "title": ""}
    task = "Given a question, retrieve passages that answer it"
    rows = [
        _row("grounded_query", "retrieval", task, asked,
             "manoeuvring technique for changing the plane of circular orbits with minimum fuel expenditure",
             passage),
        _row("grounded_query", "retrieval", task, {**asked, "query_length": "less than 5 words"},
             "what are the results of this study on finite chemical kinetic effects", passage),
        _row("grounded_query", "retrieval", task, asked,
             "how much fuel does a satellite need to tilt its orbit", passage),
        _row("generate_retrieval", "retrieval", "Given a product name, find reviews of it", {
            "query_type": "common", "query_length": "5 to 15 words", "clarity": "clear", "num_words": 50,
            "difficulty": "college", "language": "English"},
             "what a searcher would type for this task", "A review of the phone.", "A phone manual.",
             {"user_query": "what a searcher would type for this task",
              "positive_document": "A review of the phone.", "hard_negative_document": "A phone manual."}),
    ]
    from embedfactory.filter.consistency import encoder
    from embedfactory.models import load_embedder

    reasons = gate_reasons(rows, ["echo", "copy", "length", "degenerate"], encoder(load_embedder(
        "embedded:all-MiniLM-L6-v2")))
    assert reasons[0].startswith("gate copy: ")
    assert reasons[1].startswith("gate length: ")
    assert reasons[2] is None
    assert reasons[3].startswith("gate echo: ")


def test_a_prompt_variant_replaces_the_shipped_prompt_and_nothing_else():
    """bench/grounded_prompts.py sends a candidate prompt through the stage's own request builder."""
    from embedfactory import prompts
    from embedfactory.synth import grounded

    passage = documents.Passage("d1#0", "d1", "Wing flutter", "Flutter of thin wings at transonic speeds.")
    variant = prompts.compile_source("{% block system %}Write a query.{% endblock %}"
                                     "{% block user %}{{ passage }} ({{ clarity }}){% endblock %}")
    shipped_jobs, shipped = grounded.query_requests([passage], 1, 0, "Find papers")
    jobs, tried = grounded.query_requests([passage], 1, 0, "Find papers", prompt=variant)
    assert jobs == shipped_jobs and tried[0].seed == shipped[0].seed  # same draws, same sampling seed
    assert shipped[0].messages[0]["content"] == prompts.fixed_part(grounded.PROMPT)
    clarity = jobs[0][2]["clarity"]  # grounded draws ask no query_length (tests/test_gate_calibration.py)
    assert tried[0].messages == [{"role": "system", "content": "Write a query."},
                                 {"role": "user", "content": f"{passage.text} ({clarity})"}]
    assert prompts.fixed_part(variant) == "Write a query."
