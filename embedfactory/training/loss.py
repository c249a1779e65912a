"""InfoNCE with in-batch negatives (the loss of E5-mistral and sentence-transformers'
MultipleNegativesRankingLoss), plus the optional hard negative of each row.

Each anchor scores every positive and every hard negative in the batch; its own positive is the
target. Candidates whose text equals the anchor's own positive (e.g. two classification rows with the
same label) are masked: they are not negatives, and counting them as such would teach the model that
a text is unlike itself.

Inputs: anchors (B, d), docs (B + N, d) = positives then hard negatives, doc_texts (B + N) for the
duplicate mask. Temperature: 0.05 by default (sentence-transformers' scale 20); E5 used 0.02.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .rowloss import RowLoss


def in_batch_infonce(anchors: torch.Tensor, docs: torch.Tensor, doc_texts: list[str],
                     temperature: float = 0.05) -> torch.Tensor:
    batch = anchors.shape[0]
    scores = F.normalize(anchors, dim=-1) @ F.normalize(docs, dim=-1).T / temperature
    same_text = torch.tensor([[doc_texts[j] == doc_texts[i] for j in range(len(doc_texts))]
                              for i in range(batch)], device=scores.device)
    own = torch.zeros_like(same_text)
    own[torch.arange(batch), torch.arange(batch)] = True
    scores = scores.masked_fill(same_text & ~own, float("-inf"))
    return F.cross_entropy(scores, torch.arange(batch, device=scores.device))


class InfoNCELoss(RowLoss):
    """`in_batch_infonce` as a sentence-transformers loss over a batch's rows (see `rowloss.py`)."""

    def batch_loss(self, q, p, n, rows, owners):
        return in_batch_infonce(q, torch.cat([p, n]), self.table.doc_texts(rows), self.temperature)
