import numpy as np

from embedfactory.filter.consistency import ranking_consistency

VECTORS = {  # 2-d unit vectors: queries q*, documents d*
    "qa": [1, 0], "qb": [0, 1], "qc": [0.7071, 0.7071],
    "da": [0.9950, 0.0998], "db": [0.0998, 0.9950], "dc": [0.7071, 0.7071], "dx": [-1, 0],
}


def embed(texts):
    return np.array([VECTORS[t] for t in texts], dtype=np.float32)


def test_a_positive_outside_the_top_k_is_dropped_with_rank_and_reason():
    rows = [
        {"anchor": "qa", "positive": "da", "negative": "dx"},
        {"anchor": "qb", "positive": "db", "negative": None},
        {"anchor": "qa", "positive": "dx", "negative": None},  # planted: its "positive" is the opposite
    ]
    verdicts = ranking_consistency(rows, embed, topk=2)
    assert [v["kept"] for v in verdicts] == [True, True, False]
    assert verdicts[0]["rank"] == 1 and verdicts[2]["rank"] == 3
    assert verdicts[2]["drop_reason"].startswith("ranking: positive ranked 3 of 3")
    assert np.isclose(verdicts[0]["positive_score"], 0.995, atol=1e-3)
    # the k-th best score for qa (k = 2) is db's 0.0998: above the planted positive's -1
    assert np.isclose(verdicts[2]["kth_score"], 0.0998, atol=1e-3) and verdicts[2]["positive_score"] < 0


def test_top_k_larger_than_the_corpus_keeps_everything():
    rows = [{"anchor": "qc", "positive": "dx", "negative": "da"}]
    [verdict] = ranking_consistency(rows, embed, topk=50)
    assert verdict["kept"] and verdict["rank"] == 2


def test_blocks_do_not_change_the_result():
    rows = [{"anchor": q, "positive": d, "negative": None}
            for q, d in [("qa", "db"), ("qb", "db"), ("qc", "da"), ("qa", "da")]]
    assert ranking_consistency(rows, embed, 1, block=1) == ranking_consistency(rows, embed, 1, block=100)


def test_mining_returns_corpus_texts_and_never_the_rows_own():
    from embedfactory.filter.consistency import Mining

    rows = [{"anchor": "qa", "positive": "da", "negative": "dx"},
            {"anchor": "qb", "positive": "db", "negative": None},
            {"anchor": "qc", "positive": "dc", "negative": None}]
    verdicts = ranking_consistency(rows, embed, topk=3,
                                   mining=Mining(negatives=2, range_min=0, range_max=5, relative_margin=0.05))
    assert verdicts[0]["mined_negatives"] == ["dc", "db"]       # da and dx are its own
    assert "db" not in verdicts[1]["mined_negatives"]
    assert verdicts[2]["false_negative_suspects"] == 0
    assert all(v["kept"] for v in verdicts)


def test_a_revision_that_lowers_its_positives_rank_gives_way_to_the_original():
    import torch

    from embedfactory.filter.consistency import keep_better_originals, verdicts

    corpus = ["revised positive A", "distractor 1", "distractor 2", "revised positive B"]
    docs = torch.eye(4)
    # row 0's revised query points at a distractor (rank 2); its original query hits its positive
    queries = torch.tensor([[0.6, 0.8, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    rows = [{"anchor": "revised q A", "positive": corpus[0], "negative": None, "fields": "{rev A}",
             "original_fields": "{orig A}", "revision_status": "revised", "revision_reason": "clearer"},
            {"anchor": "revised q B", "positive": corpus[3], "negative": None, "fields": "{rev B}",
             "original_fields": "{orig B}", "revision_status": "revised", "revision_reason": "clearer"}]
    found = verdicts(rows, queries, corpus, docs, topk=1)
    assert [v["rank"] for v in found] == [2, 1] and not found[0]["kept"]
    originals = {0: ("original q A", "original positive A", None), 1: ("original q B", "original positive B", None)}
    # originals embedded: A's original query is its own positive's direction (rank 1); B's original
    # query is worse than its revision (a distractor beats it)
    o_queries = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.8, 0.0, 0.6]])
    o_positives = torch.tensor([[0.99, 0.14, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert keep_better_originals(rows, found, originals, o_queries, o_positives, corpus, docs, topk=1) == 1
    assert rows[0]["anchor"] == "original q A" and rows[0]["positive"] == "original positive A"
    assert rows[0]["fields"] == "{orig A}" and rows[0]["revision_status"] == "kept-original"
    assert rows[0]["revision_reason"] == "revision lowered the positive's rank from 1 to 2"
    assert found[0]["rank"] == 1 and found[0]["kept"] and found[0]["drop_reason"] is None
    assert rows[1]["anchor"] == "revised q B" and found[1]["rank"] == 1  # the better revision stands
