"""Ranking-consistency filter (KaLM-Embedding, arXiv 2501.01028).

Every query is searched against the whole corpus of the run (all positives and negatives, each text
once). A sample is kept only when its positive scores at least as high as the k-th best document, i.e.
it ranks within the top k. Rank, positive score and k-th score are stored on every row either way, and
dropped rows say why.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Embed = Callable[[list[str]], np.ndarray]  # texts -> L2-normalised rows


def ranking_consistency(rows: list[dict], embed: Embed, topk: int, block: int = 4096) -> list[dict]:
    """Return the verdict columns (kept, rank, positive_score, kth_score, drop_reason) per row."""
    corpus = list(dict.fromkeys(
        text for r in rows for text in (r["positive"], r["negative"]) if text is not None))
    if not rows:
        return []
    index = {text: i for i, text in enumerate(corpus)}
    docs = embed(corpus)
    queries = embed([r["anchor"] for r in rows])
    k = min(topk, len(corpus))
    verdicts = []
    for start in range(0, len(rows), block):  # memory bounded by block x corpus
        scores = queries[start:start + block] @ docs.T
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
        for offset, row_scores in enumerate(scores):
            i = start + offset
            positive = float(row_scores[index[rows[i]["positive"]]])
            rank = 1 + int((row_scores > positive).sum())
            kept = positive >= kth[offset]
            verdicts.append({
                "kept": bool(kept), "rank": rank, "positive_score": positive,
                "kth_score": float(kth[offset]),
                "drop_reason": None if kept else f"ranking: positive ranked {rank} of {len(corpus)} (top-k {k})",
            })
    return verdicts


def encoder(model) -> Embed:
    """Wrap a SentenceTransformer as an `Embed` function."""
    def embed(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False).astype(np.float32)
    return embed
