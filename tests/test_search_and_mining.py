import pytest
import torch
import torch.nn.functional as F

from embedfactory.config import FilterConfig
from embedfactory.eval.paired import BUNDLED_STS_TEST
from embedfactory.filter.consistency import Mining, pick_negatives
from embedfactory.filter.search import auto_topk, search


def test_block_search_equals_brute_force():
    torch.manual_seed(0)
    queries = F.normalize(torch.randn(37, 16), dim=-1)
    docs = F.normalize(torch.randn(301, 16), dim=-1)
    positive = torch.randint(0, 301, (37,))
    found = search(queries, docs, positive, top=25, query_block=8, doc_block=50)
    full = queries @ docs.T
    best = full.topk(25, dim=-1)
    assert torch.allclose(found.scores, best.values, atol=1e-6)
    assert torch.equal(found.indices, best.indices)
    exact = queries.double() @ docs.double().T
    expected_rank = (exact > exact.gather(1, positive[:, None]) + 1e-6).sum(-1) + 1
    assert torch.equal(found.rank, expected_rank)


def test_auto_topk_scales_with_the_corpus():
    assert [auto_topk(n) for n in (10, 1_000, 5_000, 10_000, 1_000_000)] == [3, 5, 25, 50, 50]


def test_mining_removes_untrusted_candidates_then_takes_the_window():
    # candidates in descending score; the positive (index 0) scores 0.80, the ceiling is 0.76
    scores = [0.90, 0.80, 0.79, 0.70, 0.60, 0.50, 0.40]
    indices = [5, 0, 6, 1, 2, 3, 4]
    cfg = Mining(negatives=2, range_min=1, range_max=5, relative_margin=0.05)
    picked, suspects = pick_negatives(scores, indices, 0.80, skip={0, 1}, cfg=cfg)
    # 0 and 1 are the row's own; 5 (0.90) and 6 (0.79) are above the ceiling: suspects, not ranked;
    # the trusted ranks are 2, 3, 4 -> the window [1, 5) starts at 3
    assert picked == [3, 4] and suspects == 2


def test_random_sampling_draws_from_the_whole_window_hardest_first_and_repeatably():
    scores = [1.0 - i / 200 for i in range(120)]  # descending; the positive (index 0) scores 1.0
    indices = list(range(120))
    cfg = Mining(negatives=7, range_min=50, range_max=100, relative_margin=0.0, sampling="random")
    picks = {q: pick_negatives(scores, indices, 1.0, skip={0}, cfg=cfg, key=q)[0] for q in ("qa", "qb", "qc")}
    for picked in picks.values():  # trusted ranks 50-99 are indices 51-100
        assert len(picked) == 7 == len(set(picked)) and all(51 <= j <= 100 for j in picked)
        assert picked == sorted(picked)  # in rank order: the hardest first
    assert len({tuple(p) for p in picks.values()}) == 3  # each query its own draw ...
    assert pick_negatives(scores, indices, 1.0, skip={0}, cfg=cfg, key="qa")[0] == picks["qa"]  # ... repeatable
    assert max(j for p in picks.values() for j in p) > 60  # not the window's top (51-57)
    top = Mining(negatives=7, range_min=50, range_max=100, relative_margin=0.0)
    assert pick_negatives(scores, indices, 1.0, skip={0}, cfg=top)[0] == list(range(51, 58))


def test_absolute_margin_tightens_the_ceiling():
    cfg = Mining(negatives=5, range_min=0, range_max=10, relative_margin=0.0, absolute_margin=0.2)
    picked, suspects = pick_negatives([0.7, 0.65, 0.55], [1, 2, 3], 0.8, skip=set(), cfg=cfg)
    assert picked == [3] and suspects == 2


def test_mining_agrees_with_sentence_transformers_on_real_pairs():
    """Same model, data, window and margin as `mine_hard_negatives`: the same negatives."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    from embedfactory.config import EMBEDDED_EMBEDDER
    from embedfactory.eval.paired import sts_pairs
    from embedfactory.filter.consistency import encoder, ranking_consistency
    from embedfactory.models import load_embedder

    rows = list({r["anchor"]: r for r in sts_pairs(BUNDLED_STS_TEST)}.values())[:150]  # one row per anchor
    model = load_embedder(EMBEDDED_EMBEDDER, "cpu")
    cfg = Mining(negatives=3, range_min=5, range_max=30, relative_margin=0.05)
    ours = ranking_consistency(rows, encoder(model), topk=None, mining=cfg)
    theirs = mine_hard_negatives(Dataset.from_list([{"anchor": r["anchor"], "positive": r["positive"]} for r in rows]),
                                 model, range_min=5, range_max=30, relative_margin=0.05, num_negatives=3,
                                 sampling_strategy="top", output_format="n-tuple", verbose=False)
    theirs = {row["anchor"]: [row[f"negative_{i}"] for i in (1, 2, 3)] for row in theirs}
    mine = {r["anchor"]: v["mined_negatives"] for r, v in zip(rows, ours) if len(v["mined_negatives"]) == 3}
    assert len(theirs) > 100 and mine.keys() == theirs.keys()
    same = sum(mine[a] == theirs[a] for a in mine)
    assert same >= 0.95 * len(mine), f"{same} of {len(mine)} identical"  # float ties may swap a pair


def test_mining_window_is_validated():
    with pytest.raises(ValueError, match="mine_range"):
        FilterConfig(mine_range=(50, 30))


def test_mining_defaults_are_kalms_recipe():
    cfg = FilterConfig()  # KaLM-Embedding: 7 hard negatives sampled from ranks 50-100
    assert (cfg.mined_negatives, cfg.mine_range, cfg.mine_sampling) == (7, (50, 100), "random")
