"""Verdicts sharded across tasks: each shard searches the corpus of every shard (embedded once by
the corpus stage) and drops the rows the duplicates stage found repeating an earlier shard."""
import json

import pyarrow as pa
import pytest

from embedfactory import models, schemas
from embedfactory.config import Endpoint, SynthParams
from embedfactory.store import ShardRecord
from embedfactory.synth import pipeline, verdicts

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
    seen = {"corpus": [], "verdicts": []}  # (done, total) as each shard reports them
    corpus = [pipeline.run_shard(pipeline.CORPUS, ctx, r.key, [r], progress=lambda d, t, *_: seen["corpus"].append((d, t)))
              for r in revised]
    assert [c.rows for c in corpus] == [3, 3]  # each shard embeds its own documents
    assert seen["corpus"] == [(2, 2), (2, 2)]  # the filter stages report progress like the generation stages
    repeats = pipeline.find_duplicates(ctx, revised)  # shard 1 against shard 0, in one pass
    assert [r.dropped for r in repeats] == [0, 1]
    pipeline.run_shard(pipeline.VERDICTS, ctx, "00000", [revised[0]], side=corpus + repeats[:1],
                       progress=lambda d, t, *_: seen["verdicts"].append((d, t)))
    assert seen["verdicts"] and seen["verdicts"][-1] == (2, 2)
    second = pipeline.run_shard(pipeline.VERDICTS, ctx, "00001", [revised[1]], side=corpus + repeats[1:])
    assert len(made) == 1  # the filter model is loaded once for two corpus and two verdict shards
    rows = ctx.stage_dir("verdicts").read(["00001"]).to_pylist()
    assert rows[0]["drop_reason"] == "exact duplicate: e00" and not rows[0]["kept"]
    assert rows[1]["kept"] and rows[1]["rank"] == 1
    assert rows[1]["kth_score"] == pytest.approx(rows[1]["positive_score"])  # k = 1: the best is the positive
    mined = rows[1]["mined_negatives"]
    assert len(mined) == 1 and mined[0] not in (ROWS[1][1][1], ROWS[1][1][2])  # from the whole corpus
    assert second.dropped == 1
    again = pipeline.run_shard(pipeline.VERDICTS, ctx, "00001", [revised[1]],
                               side=corpus + pipeline.find_duplicates(ctx, revised)[1:])
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
              pipeline.run_shard(pipeline.CORPUS, ctx, verdicts.EXTERNAL, [])]
    assert corpus[1].rows == 1
    pipeline.run_shard(pipeline.VERDICTS, ctx, "00000", [revised],
                                side=corpus + pipeline.find_duplicates(ctx, [revised]))
    bees = ctx.stage_dir("verdicts").read(["00000"]).to_pylist()[1]
    assert bees["anchor"] == "what do bees eat" and bees["rank"] == 2 and not bees["kept"]


def test_a_pool_is_its_task_types_texts_and_the_shared_ones_padded_with_background():
    from embedfactory.filter.consistency import BACKGROUND, EVERY, pool

    groups = [frozenset({"retrieval"}), frozenset({"sts"}), frozenset({EVERY}), frozenset({BACKGROUND}),
              frozenset({"retrieval", "sts"}), frozenset({BACKGROUND}), frozenset({BACKGROUND})]
    assert pool(groups, "retrieval", 0) == [0, 2, 4]
    assert pool(groups, "sts", 3) == [1, 2, 4]  # big enough: no background
    assert pool(groups, "retrieval", 5) == [0, 2, 3, 4, 5]  # padded in corpus order up to the minimum
    assert pool(groups, "classification", 10) == [2, 3, 5, 6]  # all there is


@pytest.mark.slow
def test_small_runs_search_their_task_types_pool_joined_by_background_so_top_k_drops_rows(tmp_path):
    rows = revised_rows(0)
    rows[1] = {**rows[1], "anchor": "A man is playing a guitar.", "negative": None}  # not about flour
    sts = {**rows[0], "example_id": "s", "task_type": "sts", "anchor": "A cat sleeps on a warm windowsill.",
           "positive": "A cat is napping in the sun by the window.", "negative": "The train left the station late."}
    ctx = pipeline.RunContext(params=SynthParams(store=str(tmp_path), filter={"min_corpus": 200, "mined_negatives": 2,
                                                                             "mine_range": (0, 50)}),
                              run_id="r", run_token="t", generator_url="-", revisor_url="-",
                              generator=Endpoint(), revisor=Endpoint())
    revised = ctx.stage_dir("revised").commit(pa.Table.from_pylist(rows + [sts], schema=schemas.REVISED),
                                              ShardRecord(key="00000", fingerprint="f", rows=3, stage="revised"))
    corpus = [pipeline.run_shard(pipeline.CORPUS, ctx, "00000", [revised]),
              pipeline.run_shard(pipeline.CORPUS, ctx, verdicts.BACKGROUND, [])]
    assert verdicts.corpus_keys(ctx.params) == [verdicts.BACKGROUND] and corpus[1].rows == 200
    pipeline.run_shard(pipeline.VERDICTS, ctx, "00000", [revised],
                                side=corpus + pipeline.find_duplicates(ctx, [revised]))
    tides, guitar, cat = ctx.stage_dir("verdicts").read(["00000"]).to_pylist()
    print(tides["rank"], guitar["drop_reason"], cat["rank"], tides["mined_negatives"])
    assert tides["kept"] and tides["rank"] == 1
    # k = 3 (0.5% of a 200-text pool, at least 3): without the background the pool had 3 texts and
    # kept everything; background sentences about men playing music now outrank the flour document
    assert not guitar["kept"] and guitar["drop_reason"].endswith("of 200 (top-k 3)")
    assert cat["kept"] and cat["drop_reason"] is None
    sts_texts = {sts["positive"], sts["negative"]}
    assert tides["mined_negatives"] and not sts_texts & set(tides["mined_negatives"])  # its own type's pool


@pytest.mark.slow
def test_a_revision_that_lowers_the_rank_of_its_positive_is_undone_in_the_verdicts(tmp_path):
    original = {"user_query": "what makes bees collect pollen",
                "positive_document": "Bees feed on nectar for energy and pollen for protein.",
                "hard_negative_document": "Wasps hunt other insects."}
    revision = {**original, "user_query": "how do tides work"}  # the revisor broke the query
    rows = revised_rows(0)
    rows[1] = {**rows[1], "example_id": "bees", "anchor": revision["user_query"],
               "positive": revision["positive_document"], "negative": revision["hard_negative_document"],
               "fields": json.dumps(revision), "original_fields": json.dumps(original),
               "revision_status": "revised", "revision_reason": "clearer"}
    ctx = pipeline.RunContext(params=SynthParams(store=str(tmp_path), filter={"topk": 1, "background_corpus": None}),
                              run_id="r", run_token="t", generator_url="-", revisor_url="-",
                              generator=Endpoint(), revisor=Endpoint())
    revised = ctx.stage_dir("revised").commit(pa.Table.from_pylist(rows, schema=schemas.REVISED),
                                              ShardRecord(key="00000", fingerprint="f", rows=2, stage="revised"))
    corpus = [pipeline.run_shard(pipeline.CORPUS, ctx, "00000", [revised])]
    record = pipeline.run_shard(pipeline.VERDICTS, ctx, "00000", [revised],
                                side=corpus + pipeline.find_duplicates(ctx, [revised]))
    bees = ctx.stage_dir("verdicts").read(["00000"]).to_pylist()[1]
    print(bees["revision_reason"], bees["rank"])
    assert bees["anchor"] == original["user_query"] and json.loads(bees["fields"]) == original
    assert bees["revision_status"] == "kept-original" and bees["rank"] == 1 and bees["kept"]
    assert bees["revision_reason"].startswith("revision lowered the positive's rank from 1 to ")
    assert record.extra["revisions_reverted_by_rank"] == 1
