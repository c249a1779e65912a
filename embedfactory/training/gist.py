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

Citation: Aivin V. Solatorio. GISTEmbed: Guided In-sample Selection of Training Negatives for Text
Embedding Fine-tuning. arXiv:2402.16829, 2024.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


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
