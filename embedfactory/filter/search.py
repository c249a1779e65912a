"""Exact nearest-neighbour search in blocks, for the consistency filter and hard-negative mining.

Scores are dot products of L2-normalised embeddings (cosine). Queries and documents are taken in
blocks, so the score matrix held at any time is `query_block x doc_block`, whatever the corpus size;
per query only a running top-`top` list and the count of documents above its positive are kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


TIE = 1e-6  # score differences below this are float rounding (the positive's own score included)


@dataclass
class Neighbours:
    scores: torch.Tensor     # (Q, top) best scores, descending
    indices: torch.Tensor    # (Q, top) their document indices
    positive: torch.Tensor   # (Q,) score of each query's positive document
    rank: torch.Tensor       # (Q,) 1 + number of documents scoring above the positive (by > TIE)


def search(queries: torch.Tensor, docs: torch.Tensor, positive_index: torch.Tensor, top: int,
           query_block: int = 1024, doc_block: int = 16384) -> Neighbours:
    top = min(top, docs.shape[0])
    out_scores, out_indices, out_positive, out_rank = [], [], [], []
    for q0 in range(0, queries.shape[0], query_block):
        q = queries[q0:q0 + query_block]
        positive = (q * docs[positive_index[q0:q0 + query_block]]).sum(-1)
        best_s = torch.full((q.shape[0], 0), float("-inf"), dtype=q.dtype, device=q.device)
        best_i = torch.zeros((q.shape[0], 0), dtype=torch.long, device=q.device)
        above = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        for d0 in range(0, docs.shape[0], doc_block):
            scores = q @ docs[d0:d0 + doc_block].T
            above += (scores > positive[:, None] + TIE).sum(-1)
            block_s, block_i = scores.topk(min(top, scores.shape[1]), dim=-1)
            merged_s = torch.cat([best_s, block_s], dim=-1)
            merged_i = torch.cat([best_i, block_i + d0], dim=-1)
            best_s, order = merged_s.topk(min(top, merged_s.shape[1]), dim=-1)
            best_i = merged_i.gather(-1, order)
        out_scores.append(best_s)
        out_indices.append(best_i)
        out_positive.append(positive)
        out_rank.append(above + 1)
    return Neighbours(torch.cat(out_scores), torch.cat(out_indices), torch.cat(out_positive),
                      torch.cat(out_rank))


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' where a GPU is visible, else 'cpu'."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def auto_topk(corpus_size: int) -> int:
    """The filter's default k: 0.5% of the corpus, at least 3, at most KaLM's 50 (reached at 10k docs)."""
    return max(3, min(50, -(-corpus_size // 200)))


def rank_outside(queries: torch.Tensor, positives: torch.Tensor, docs: torch.Tensor, exclude: torch.Tensor,
                 query_block: int = 1024, doc_block: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """(rank, score) of each query's own positive, given as a vector that need not be in `docs`:
    1 + the documents scoring above it, the document `exclude[i]` (or -1: none) not counted."""
    ranks, scores = [], []
    for q0 in range(0, queries.shape[0], query_block):
        q, skip = queries[q0:q0 + query_block], exclude[q0:q0 + query_block]
        positive = (q * positives[q0:q0 + query_block]).sum(-1)
        above = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        for d0 in range(0, docs.shape[0], doc_block):
            beats = (q @ docs[d0:d0 + doc_block].T) > positive[:, None] + TIE
            mine = (skip >= d0) & (skip < d0 + beats.shape[1])
            rows = mine.nonzero().squeeze(-1)
            beats[rows, skip[rows] - d0] = False
            above += beats.sum(-1)
        ranks.append(above + 1)
        scores.append(positive)
    return torch.cat(ranks), torch.cat(scores)
