"""Verdicts sharded across tasks: each shard searches the corpus of every shard (embedded once by
the corpus stage) and drops rows that repeat an earlier shard."""
import json

import pyarrow as pa
import pytest

from embedfactory import models, pipeline, schemas
from embedfactory.config import Endpoint, SynthParams
from embedfactory.store import ShardRecord

ROWS = [
    [("how do tides work", "Tides are driven by the moon's gravity pulling on the oceans.", "A tide pool is home to crabs."),
     ("best way to store flour", "Keep flour in an airtight container in a cool, dry place.", None)],
    [("how do tides work", "Tides are driven by the moon's gravity pulling on the oceans.", None),  # repeats shard 0
     ("what do bees eat", "Bees feed on nectar for energy and pollen for protein.", "Wasps hunt other insects.")],
]


def revised_rows(shard: int) -> list[dict]:
    return [{"example_id": f"e{shard}{i}", "task_id": "t", "persona_id": "p", "task_type": "retrieval",
             "task": "Given a question, find the answer", "attributes": json.dumps({}), "anchor": a,
             "positive": p, "negative": n, "fields": "{}", "original_fields": "{}", "status": "ok",
             "revision_status": "skipped"} for i, (a, p, n) in enumerate(ROWS[shard])]


@pytest.mark.slow
def test_each_verdict_shard_searches_all_shards_and_dedupes_against_earlier_ones(tmp_path, monkeypatch):
    import sentence_transformers

    made = []

    class Counted(sentence_transformers.SentenceTransformer):
        def __init__(self, *args, **kwargs):
            made.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(models, "_loaded", {})
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", Counted)
    ctx = pipeline.RunContext(params=SynthParams(store=str(tmp_path), filter={"topk": 1, "mined_negatives": 1,
                                                                             "mine_range": (0, 5)}),
                              run_id="r", run_token="t", generator_url="-", revisor_url="-",
                              generator=Endpoint(), revisor=Endpoint())
    revised = [ctx.stage_dir("revised").commit(pa.Table.from_pylist(revised_rows(i), schema=schemas.REVISED),
                                               ShardRecord(key=f"0000{i}", fingerprint="f", rows=2, stage="revised"))
               for i in range(2)]
    corpus = [pipeline.run_shard(pipeline.CORPUS, ctx, r.key, [r]) for r in revised]
    assert [c.rows for c in corpus] == [3, 3]  # each shard embeds its own documents
    pipeline.run_shard(pipeline.VERDICTS, ctx, "00000", [revised[0]], side=corpus)
    second = pipeline.run_shard(pipeline.VERDICTS, ctx, "00001", [revised[1]], side=corpus + revised[:1])
    assert len(made) == 1  # the filter model is loaded once for two corpus and two verdict shards
    rows = ctx.stage_dir("verdicts").read(["00001"]).to_pylist()
    assert rows[0]["drop_reason"] == "exact duplicate: e00" and not rows[0]["kept"]
    assert rows[1]["kept"] and rows[1]["rank"] == 1
    assert rows[1]["kth_score"] == pytest.approx(rows[1]["positive_score"])  # k = 1: the best is the positive
    mined = rows[1]["mined_negatives"]
    assert len(mined) == 1 and mined[0] not in (ROWS[1][1][1], ROWS[1][1][2])  # from the whole corpus
    assert second.dropped == 1
    again = pipeline.run_shard(pipeline.VERDICTS, ctx, "00001", [revised[1]], side=corpus + revised[:1])
    assert again.fingerprint == second.fingerprint and again.run_token == second.run_token


@pytest.mark.slow
def test_an_external_corpus_joins_the_search(tmp_path):
    external = tmp_path / "docs.jsonl"
    external.write_text(json.dumps({"text": "Bees feed on nectar and pollen gathered from flowers."}) + "\n")
    ctx = pipeline.RunContext(params=SynthParams(store=str(tmp_path / "store"),
                                                 filter={"topk": 1, "external_corpus": str(external)}),
                              run_id="r", run_token="t", generator_url="-", revisor_url="-",
                              generator=Endpoint(), revisor=Endpoint())
    revised = ctx.stage_dir("revised").commit(pa.Table.from_pylist(revised_rows(1), schema=schemas.REVISED),
                                              ShardRecord(key="00000", fingerprint="f", rows=2, stage="revised"))
    corpus = [pipeline.run_shard(pipeline.CORPUS, ctx, "00000", [revised]),
              pipeline.run_shard(pipeline.CORPUS, ctx, pipeline.EXTERNAL, [])]
    assert corpus[1].rows == 1
    pipeline.run_shard(pipeline.VERDICTS, ctx, "00000", [revised], side=corpus)
    bees = ctx.stage_dir("verdicts").read(["00000"]).to_pylist()[1]
    assert bees["anchor"] == "what do bees eat" and bees["rank"] == 2 and not bees["kept"]
