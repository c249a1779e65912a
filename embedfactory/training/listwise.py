"""Listwise distillation: each row's (positive, hard negatives) list, ranked softly as the teacher ranks it.

MarginMSE (`margin.py`) matches each (positive, negative) margin on its own. Here the teacher's scores
of a row's positive and hard negatives become a distribution (a softmax at the student's temperature)
and the student's scores of the same texts are pulled toward it by the KL divergence, as RocketQAv2's
dynamic listwise distillation and sentence-transformers' `DistillKLDivLoss` do. Only the shape of the
teacher's ranking is learnt: a near-tie between the positive and a negative (likely a second relevant
document) asks for a near-tie, not a wide margin, and a clear negative asks for a clear gap.

Since a softmax does not change when every score of a list moves by the same amount, the list is given
as margins (positive minus each negative), the form the trainer already has (`margin.student_margins`,
`trainer._teacher_margins`): a row's logits are 0 for the positive and -margin for each negative.
Rows may have different numbers of negatives (`owners` says whose each is).

Citations: Ruiyang Ren et al. RocketQAv2: A Joint Training Method for Dense Passage Retrieval and
Passage Re-ranking. EMNLP 2021. Sebastian Hofstätter et al. Efficiently Teaching an Effective Dense
Retriever with Balanced Topic Aware Sampling (TAS-B). SIGIR 2021.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .loss import in_batch_infonce
from .margin import student_margins
from .rowloss import RowLoss

_ABSENT = -1e4  # the logit of an empty slot of a shorter list: a probability of exactly 0 in float32


def row_logits(margins: torch.Tensor, owners: torch.Tensor, rows: int) -> torch.Tensor:
    """(rows, 1 + most negatives of a row): column 0 the positive (0), then -margin of each negative of
    the row in the given order; empty slots hold _ABSENT."""
    owners_list = owners.tolist()
    width = 1 + max((owners_list.count(r) for r in range(rows)), default=0)
    slot, seen = [], [0] * rows
    for r in owners_list:
        seen[r] += 1
        slot.append(seen[r])
    logits = torch.full((rows, width), _ABSENT, dtype=margins.dtype, device=margins.device)
    logits[:, 0] = 0.0
    return logits.index_put((owners.to(margins.device), torch.tensor(slot, device=margins.device)), -margins)


def listwise_kl_loss(student_margins: torch.Tensor, teacher_margins: torch.Tensor, owners: torch.Tensor,
                     rows: int) -> torch.Tensor:
    """Mean over rows of KL(teacher || student) between the softmaxes of their lists. Both margins are
    logits already (scores / temperature); rows without a negative add 0."""
    teacher = row_logits(teacher_margins.to(student_margins), owners, rows)
    student = row_logits(student_margins, owners, rows)
    return F.kl_div(F.log_softmax(student, dim=-1), F.log_softmax(teacher, dim=-1), log_target=True,
                    reduction="sum") / rows


class ListwiseKLLoss(RowLoss):
    """InfoNCE over in-batch and hard negatives plus the listwise KL to the teacher's ranking of each
    row's list, both at the loss's temperature."""

    def batch_loss(self, q, p, n, rows, owners):
        q, p, n = (F.normalize(x, dim=-1) for x in (q, p, n))
        tau = self.temperature
        margins = self.teacher_margins(rows, q.device)
        return (in_batch_infonce(q, torch.cat([p, n]), self.table.doc_texts(rows), tau)
                + listwise_kl_loss(student_margins(q, p, n, owners) / tau, margins / tau, owners, len(q)))
