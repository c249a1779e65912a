import pytest
import torch
import torch.nn.functional as F

from embedfactory.config import FilterConfig
from embedfactory.filtering import Mining, pick_negatives
from embedfactory.search import auto_topk, search


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


def test_mining_takes_the_window_skips_own_texts_and_flags_near_positives():
    # candidates in descending score; the positive (index 0) scores 0.80
    scores = [0.90, 0.80, 0.79, 0.70, 0.60, 0.50, 0.40]
    indices = [5, 0, 6, 1, 2, 3, 4]
    cfg = Mining(negatives=2, range_min=1, range_max=5, relative_margin=0.05)
    picked, suspects = pick_negatives(scores, indices, 0.80, skip={0, 1}, cfg=cfg)
    # ranks without skipped: 5 (rank 0, below range_min), 6 (rank 1: 0.79 > 0.76, suspect),
    # 2 (rank 2, kept), 3 (rank 3, kept) -> stop at 2 negatives
    assert picked == [2, 3] and suspects == 1


def test_absolute_margin_tightens_the_ceiling():
    cfg = Mining(negatives=5, range_min=0, range_max=10, relative_margin=0.0, absolute_margin=0.2)
    picked, suspects = pick_negatives([0.7, 0.65, 0.55], [1, 2, 3], 0.8, skip=set(), cfg=cfg)
    assert picked == [3] and suspects == 2


def test_mining_window_is_validated():
    with pytest.raises(ValueError, match="mine_range"):
        FilterConfig(mine_range=(50, 30))
