"""MarginMSE (Hofstätter et al. 2020), the loss GPL distils a teacher with (Wang et al. 2022).

For each hard negative n_i of a row: the student's margin is s(q, p) - s(q, n_i), the teacher's the
same with its own scores (`teacher.py`); the loss is the mean squared error between the two over all
(row, negative) pairs of the batch. Only score differences are learnt, so the student may keep its
own scale of scores as long as it ranks the negatives by the teacher's distances.

The score s is the dot product of the embeddings given. The trainer gives the student's embeddings
L2-normalised, so s is the cosine: the score a bi-encoder teacher uses. A cross-encoder teacher's
score is its own output (`CrossEncoder.predict`), on its own scale; its margins are learnt as they
are, as GPL does.

Inputs: queries q (B, d), positives p (B, d), hard negatives n (N, d), the teacher's margins (N,),
and `owners` (N,), the row of each negative (default: one negative per row, n[i] belongs to q[i]).

Usage::

    loss = margin_mse_loss(q, p, n, teacher_pos - teacher_neg, owners)

Citations: Sebastian Hofstätter et al. Improving Efficient Neural Ranking Models with Cross-Architecture
Knowledge Distillation. arXiv:2010.02666, 2020. Kexin Wang, Nandan Thakur, Nils Reimers, Iryna
Gurevych. GPL: Generative Pseudo Labeling for Unsupervised Domain Adaptation of Dense Retrieval.
NAACL 2022.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .loss import in_batch_infonce
from .rowloss import RowLoss


def student_margins(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor,
                    owners: torch.Tensor | None = None) -> torch.Tensor:
    """dot(q, p) - dot(q, n_i) for every negative, (N,)."""
    if owners is None:
        if n.shape[0] != q.shape[0]:
            raise ValueError(f"{n.shape[0]} negatives for {q.shape[0]} rows: give each negative's row (owners)")
        owners = torch.arange(q.shape[0], device=q.device)
    q, p = q[owners], p[owners]
    return (q * p).sum(-1) - (q * n).sum(-1)


def margin_mse_loss(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, teacher_margins: torch.Tensor,
                    owners: torch.Tensor | None = None) -> torch.Tensor:
    margins = student_margins(q, p, n, owners)
    return F.mse_loss(margins, teacher_margins.to(device=margins.device, dtype=margins.dtype))


class MarginMSELoss(RowLoss):
    """MarginMSE on the rows' stored teacher scores, on cosines; with `infonce`, plus InfoNCE over
    in-batch and hard negatives, both on the logit scale (cosine / temperature)."""

    def __init__(self, *args, infonce: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.infonce = infonce

    def batch_loss(self, q, p, n, rows, owners):
        q, p, n = (F.normalize(x, dim=-1) for x in (q, p, n))
        margins = self.teacher_margins(rows, q.device)
        if not self.infonce:
            return margin_mse_loss(q, p, n, margins, owners)
        tau = self.temperature
        return (in_batch_infonce(q, torch.cat([p, n]), self.table.doc_texts(rows), tau)
                + margin_mse_loss(q / tau, p, n, margins / tau, owners))
