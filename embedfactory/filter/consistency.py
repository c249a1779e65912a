"""Ranking-consistency filter (KaLM-Embedding, arXiv 2501.01028) and positive-aware hard-negative
mining (NV-Retriever's TopK-PercPos, arXiv 2407.15831), from one exact search.

Every query is searched against its pool (`pool`): the run's positives and negatives of its own
task type (each text once), the external corpus, and on small runs background texts up to a minimum
size, so that a top k cannot keep everything by construction. A sample is kept only when its
positive scores at least as high as the k-th best document of its pool, i.e. it ranks within the top k. Rank, positive score and k-th score are stored on every row either
way, and dropped rows say why.

Mining takes the candidates of the same search (the row's own positive and generated negative
skipped), drops any that score above `(1 - relative_margin)` of the positive's score or within
`absolute_margin` of it, counting those as likely false negatives, and keeps the best `negatives`
from the rank window of the rest.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..ids import stable_hash
from ..models import Embed
from ..schemas import Reason
from .search import auto_topk, rank_outside, search



@dataclass(frozen=True)
class Mining:
    negatives: int = 7
    range_min: int = 30
    range_max: int = 100
    relative_margin: float = 0.05
    absolute_margin: float | None = None
    sampling: str = "top"  # "top": the window's first; "random": a sample of it (KaLM), in rank order


EVERY = "*"  # the group of texts every pool searches (the external corpus)
BACKGROUND = "background"  # the group of texts that pad small pools


def corpus_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(t for r in rows for t in (r["positive"], r["negative"]) if t is not None))


def grouped_corpus_of(rows: list[dict]) -> list[tuple[str, str]]:
    """(text, task type) of every positive and negative, each pair once."""
    return list(dict.fromkeys((t, r["task_type"]) for r in rows for t in (r["positive"], r["negative"])
                              if t is not None))


def pool(groups: list[frozenset], task_type: str, min_size: int) -> list[int]:
    """The corpus indices a query of `task_type` is searched in: texts of its own task type and of
    EVERY group, joined by BACKGROUND texts (in corpus order) while fewer than `min_size`."""
    own = [i for i, g in enumerate(groups) if task_type in g or EVERY in g]
    if len(own) >= min_size:
        return own
    mine = set(own)
    padding = [i for i, g in enumerate(groups) if BACKGROUND in g and i not in mine][:min_size - len(own)]
    return sorted(own + padding)


def ranking_consistency(rows: list[dict], embed: Embed, topk: int | None, mining: Mining | None = None,
                        block: int = 1024) -> list[dict]:
    """The verdict columns per row, the corpus being the rows' own positives and negatives (see
    `verdicts`); each text is embedded once."""
    if not rows:
        return []
    corpus = corpus_of(rows)
    texts = list(dict.fromkeys(corpus + [r["anchor"] for r in rows]))
    vectors = torch.from_numpy(embed(texts))
    where = {text: i for i, text in enumerate(texts)}
    return verdicts(rows, vectors[[where[r["anchor"]] for r in rows]], corpus, vectors[:len(corpus)],
                    topk, mining, block)


def verdicts(rows: list[dict], queries: torch.Tensor, corpus: list[str], docs: torch.Tensor,
             topk: int | None, mining: Mining | None = None, block: int = 1024) -> list[dict]:
    """The verdict columns per row: kept, rank, positive_score, kth_score, drop_reason, and with
    `mining` also mined_negatives and false_negative_suspects. `queries` are the rows' anchors
    embedded, `docs` the corpus embedded (every row's positive among them); `topk=None` picks
    `auto_topk`."""
    index = {text: i for i, text in enumerate(corpus)}
    k = pool_topk(len(corpus), topk)
    depth = max(k, mining.range_max + 2) if mining else k  # +2: the row's own positive and negative
    found = search(queries, docs, torch.tensor([index[r["positive"]] for r in rows], device=docs.device),
                   depth, query_block=block)
    scores, indices = found.scores.cpu().tolist(), found.indices.cpu().tolist()
    ranks, positives = found.rank.cpu().tolist(), found.positive.cpu().tolist()
    out = []
    for i, row in enumerate(rows):
        rank, positive = ranks[i], positives[i]
        kept = rank <= k
        verdict = {"kept": kept, "rank": rank, "positive_score": positive, "kth_score": scores[i][k - 1],
                   "drop_reason": None if kept else ranked_out(rank, len(corpus), k)}
        if mining:
            skip = {index[row["positive"]]} | ({index[row["negative"]]} if row["negative"] is not None else set())
            picked, suspects = pick_negatives(scores[i], indices[i], positive, skip, mining, key=row["anchor"])
            verdict.update(mined_negatives=[corpus[j] for j in picked], false_negative_suspects=suspects)
        out.append(verdict)
    return out


def ranked_out(rank: int, pool: int, k: int) -> Reason:
    return Reason("ranking", "rank", f"positive ranked {rank} of {pool} (top-k {k})")


def pool_topk(size: int, topk: int | None) -> int:
    return min(topk or auto_topk(size), size)


def keep_better_originals(rows: list[dict], verdicts: list[dict], originals: dict[int, tuple],
                          queries: torch.Tensor, positives: torch.Tensor, corpus: list[str],
                          docs: torch.Tensor, topk: int | None) -> int:
    """Revisor acceptance: a revision stands only if it does not lower its positive's rank. For the
    rows `originals` names (row index -> original anchor, positive, negative; `queries` and
    `positives` their original anchors and positives embedded, in that order), the original's rank
    is measured in the same pool, the revised positive not counted; where it is better, the row and
    its verdict go back to the original (in place), with the reason. Returns how many did."""
    if not originals:
        return 0
    index = {text: i for i, text in enumerate(corpus)}
    which = list(originals)
    exclude = torch.tensor([index.get(rows[i]["positive"], -1) for i in which], device=docs.device)
    ranks, scores = rank_outside(queries, positives, docs, exclude)
    k, reverted = pool_topk(len(corpus), topk), 0
    for i, rank, score in zip(which, ranks.tolist(), scores.tolist()):
        revised_rank = verdicts[i]["rank"]
        if rank >= revised_rank:
            continue
        reverted += 1
        anchor, positive, negative = originals[i]
        rows[i].update(anchor=anchor, positive=positive, negative=negative, fields=rows[i]["original_fields"],
                       revision_status="kept-original",
                       revision_reason=f"revision lowered the positive's rank from {rank} to {revised_rank}")
        verdicts[i].update(rank=rank, positive_score=score, kept=rank <= k,
                           drop_reason=None if rank <= k else ranked_out(rank, len(corpus), k))
    return reverted


def pick_negatives(scores: list[float], indices: list[int], positive: float, skip: set[int],
                   cfg: Mining, key: str = "") -> tuple[list[int], int]:
    """Negatives from ranks [range_min, range_max) of the trusted candidates, and how many candidates
    sat too close to the positive to be trusted (likely false negatives). As in NV-Retriever's
    TopK-PercPos and sentence-transformers' `mine_hard_negatives`, the row's own texts and the
    untrusted candidates are removed first; the window ranks what remains. `cfg.sampling` "random"
    draws them from the whole window (KaLM: 7 from ranks 50-100), seeded by `key` (the query), and
    returns them hardest first."""
    ceiling = positive - cfg.relative_margin * abs(positive)
    if cfg.absolute_margin is not None:
        ceiling = min(ceiling, positive - cfg.absolute_margin)
    candidates = [(score, j) for score, j in zip(scores, indices) if j not in skip]
    trusted = [j for score, j in candidates if score <= ceiling]
    window = trusted[cfg.range_min:cfg.range_max]
    if cfg.sampling == "random" and len(window) > cfg.negatives:
        rng = random.Random(stable_hash("mine", key))
        window = [window[i] for i in sorted(rng.sample(range(len(window)), cfg.negatives))]
    return window[:cfg.negatives], len(candidates) - len(trusted)


def encoder(model, batch_size: int = 64, role: Literal["query", "document"] | None = None) -> Embed:
    """Wrap a SentenceTransformer as an `Embed` function: with `role`, through `encode_query` or
    `encode_document`, i.e. with the model's own query or document prompt where it has one
    (EmbeddingGemma); bare otherwise (MiniLM has none, so both equal the bare `encode`)."""
    encode = {"query": getattr(model, "encode_query", None), "document": getattr(model, "encode_document", None)}
    encode = encode.get(role) or model.encode  # a model object without the two methods: bare

    def embed(texts: list[str]) -> np.ndarray:
        return encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                      show_progress_bar=False).astype(np.float32)
    return embed
