"""Retrieval scores for query sets with one relevant document each (e.g. paraphrase pairs).

nDCG@10 with a single relevant document is 1 / log2(rank + 1) when it ranks within 10, else 0;
recall@k is the share of queries whose document ranks within k.
"""
from __future__ import annotations

import math

import torch

from .filtering import Embed
from .search import search


def pair_retrieval(embed: Embed, queries: list[str], documents: list[str], relevant: list[int]) -> dict:
    """Search every query against all documents; `relevant[i]` indexes query i's document."""
    q = torch.from_numpy(embed(queries))
    d = torch.from_numpy(embed(documents))
    ranks = search(q, d, torch.tensor(relevant), top=1).rank.tolist()
    return {"ndcg@10": sum(1 / math.log2(r + 1) for r in ranks if r <= 10) / len(ranks),
            "recall@1": sum(r <= 1 for r in ranks) / len(ranks),
            "recall@10": sum(r <= 10 for r in ranks) / len(ranks), "queries": len(ranks)}
