"""GISTEmbed loss (Solatorio, arXiv 2402.16829): InfoNCE whose in-batch negatives are vetted by a guide.

A guide model (any embedding model, usually stronger than the student) scores the same pairs; every
in-batch candidate (query-positive, query-negative, query-query, positive-positive) that the guide
scores above the guide's score of the true pair is a likely false negative and is masked out (-inf)
before the softmax. Margins loosen the test:
- absolute: mask when guide(candidate) >= guide(pair) - margin
- relative: mask when guide(candidate) >= guide(pair) - |guide(pair)| * margin

A tie counts as a false negative: a copy of the row's own positive elsewhere in the batch gets the
very same guide score (the trainer looks guide embeddings up per text), and is masked, where
sentence-transformers' GISTEmbedLoss (strict >) keeps it as a negative. Otherwise the two agree.

Inputs: student and guide embeddings of anchors (B, d), positives (B, d) and optional hard negatives
(N, d) — the guide's may have another width. Temperature 0.01 as in the paper. Recommended with the
semi-homogeneous sampler (`sampler.py`), which keeps duplicate texts out of a batch.

Usage::

    loss = gist_loss(student(a), student(p), student(n), guide(a), guide(p), guide(n))

`GISTLoss`, the sentence-transformers loss, embeds every distinct text of the training rows with the
guide once, before the first step (`GuideTable`), and looks a batch's rows up in it; sentence-transformers'
`GISTEmbedLoss` runs the guide again on every batch of every epoch.

Citation: Aivin V. Solatorio. GISTEmbed: Guided In-sample Selection of Training Negatives for Text
Embedding Fine-tuning. arXiv:2402.16829, 2024.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .data import RowTable
from .rowloss import RowLoss


def _cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T


def false_negative_mask(guide_scores: torch.Tensor, guide_pair: torch.Tensor, margin: float,
                        strategy: Literal["absolute", "relative"]) -> torch.Tensor:
    """True where the guide rates a candidate at or above the row's true pair (minus the margin)."""
    threshold = guide_pair - (margin if strategy == "absolute" else guide_pair.abs() * margin)
    return guide_scores >= threshold[:, None]


def gist_loss(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None,
              guide_anchors: torch.Tensor, guide_positives: torch.Tensor, guide_negatives: torch.Tensor | None,
              temperature: float = 0.01, margin: float = 0.0,
              strategy: Literal["absolute", "relative"] = "absolute") -> torch.Tensor:
    batch = anchors.shape[0]
    own = torch.eye(batch, dtype=torch.bool, device=anchors.device)
    with torch.no_grad():
        guide_ap = _cos(guide_anchors, guide_positives)
        guide_pair = guide_ap.diagonal()
    blocks = [(_cos(anchors, positives), guide_ap, own),  # the true pair itself is never masked
              (_cos(anchors, anchors), _cos(guide_anchors, guide_anchors), None),
              (_cos(positives, positives), _cos(guide_positives, guide_positives), None)]
    if negatives is not None and negatives.shape[0]:
        blocks.append((_cos(anchors, negatives), _cos(guide_anchors, guide_negatives), None))
    scores = []
    for student, guide, keep in blocks:
        mask = false_negative_mask(guide.detach(), guide_pair, margin, strategy)
        if keep is not None:
            mask &= ~keep
        scores.append(student.masked_fill(mask, float("-inf")))
    logits = torch.cat(scores, dim=1) / temperature
    return F.cross_entropy(logits, torch.arange(batch, device=anchors.device))


class GuideTable:
    """The guide's embeddings of every distinct anchor (with its query prompt) and document (with its
    document prompt) of the training rows, computed once; looked up by row index."""

    def __init__(self, guide, table: RowTable, batch_size: int = 32):
        kwargs = dict(batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
        queries = list(dict.fromkeys(table.anchors))
        docs = list(dict.fromkeys([*table.positives, *(n for negs in table.negatives for n in negs)]))
        with torch.no_grad():
            self.q = guide.encode_query(queries, **kwargs).float().cpu()
            self.d = guide.encode_document(docs, **kwargs).float().cpu()
        q_at, d_at = {t: i for i, t in enumerate(queries)}, {t: i for i, t in enumerate(docs)}
        self.anchor = [q_at[t] for t in table.anchors]
        self.positive = [d_at[t] for t in table.positives]
        self.negatives = [[d_at[t] for t in negs] for negs in table.negatives]

    def lookup(self, rows: list[int], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The guide's anchors (B, d), positives (B, d) and negatives (N, d) of `rows`."""
        neg = [i for r in rows for i in self.negatives[r]]
        return (self.q[[self.anchor[r] for r in rows]].to(device), self.d[[self.positive[r] for r in rows]].to(device),
                self.d[neg].to(device) if neg else self.d.new_zeros((0, self.d.shape[1]), device=device))


class GISTLoss(RowLoss):
    """`gist_loss` as a sentence-transformers loss, the guide's embeddings looked up per row."""

    def __init__(self, model, table: RowTable, guide: GuideTable, temperature: float = 0.01, margin: float = 0.0,
                 strategy: Literal["absolute", "relative"] = "absolute", **kwargs):
        super().__init__(model, table, temperature, **kwargs)
        self.guide, self.margin, self.strategy = guide, margin, strategy

    def batch_loss(self, q, p, n, rows, owners):
        gq, gp, gn = self.guide.lookup(rows, q.device)
        return gist_loss(q, p, n if n.shape[0] else None, gq, gp, gn if gn.shape[0] else None,
                         temperature=self.temperature, margin=self.margin, strategy=self.strategy)
