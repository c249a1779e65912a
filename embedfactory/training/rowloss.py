"""The base of the project's sentence-transformers losses: embeddings of a batch's anchors, positives
and negatives in, one loss out, with the rest of each row (`data.RowTable`) looked up by its label.

Gradient caching (GradCache, Gao et al. 2021, arXiv 2101.06983) comes from sentence-transformers'
`CachedLossMixin`, the machinery of its Cached* losses: every mini-batch is embedded without
activations, the loss's gradient with respect to the embeddings is computed for the whole batch, then
each mini-batch is embedded again (its dropout replayed) and back-propagates its slice. Without it the
batch is embedded once, with activations. A subclass gives `batch_loss`.

Several processes (DDP): every process gathers the embeddings and labels of all processes' batches
(its own keep their gradient) and computes the loss of the global batch, so in-batch negatives span
the processes and the loss equals a single process's on the same global batch. Each process's
gradient reaches its own embeddings only, and DDP averages the processes' gradients, so the gradient
is scaled by the number of processes to equal the single process's.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from torch import nn

from .data import RowTable


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's `tensor` (sizes may differ in the first dimension), concatenated in rank order;
    this process's part keeps its gradient."""
    if _world() == 1:
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(_world())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]]))
    most = max(int(s) for s in sizes)
    padded = torch.cat([tensor, tensor.new_zeros((most - tensor.shape[0], *tensor.shape[1:]))])
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.detach().contiguous())
    parts[dist.get_rank()] = padded
    return torch.cat([p[:int(s)] for p, s in zip(parts, sizes)])


class RowLoss(CachedLossMixin, nn.Module):
    def __init__(self, model, table: RowTable, temperature: float, cached: bool = False, mini_batch_size: int = 32):
        nn.Module.__init__(self)
        self.model, self.table, self.temperature = model, table, temperature
        self.mini_batch_size = mini_batch_size
        self.uses_gradient_cache = cached  # read by MatryoshkaLoss

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        if self.uses_gradient_cache:
            return self.forward_cached(sentence_features, labels)
        return self.calculate_loss([[self.model(f)["sentence_embedding"]] for f in sentence_features], labels)

    def calculate_loss(self, reps, labels=None, *, with_backward: bool = False) -> torch.Tensor:
        q, p, *n = (torch.cat(mbs).float() for mbs in reps)
        n = n[0] if n else q.new_zeros((0, q.shape[1]))
        rows = gather(labels.to(q.device)).tolist()
        q, p, n = gather(q), gather(p), gather(n)
        owners = torch.tensor(self.table.owners(rows), dtype=torch.long, device=q.device)
        loss = self.batch_loss(q, p, n, rows, owners)
        if _world() > 1:  # the value of the global batch's loss, the gradient a single process would get
            loss = loss * _world() - (loss * (_world() - 1)).detach()
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def batch_loss(self, q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, rows: list[int],
                   owners: torch.Tensor) -> torch.Tensor:
        """The loss of a batch: anchors q (B, d), positives p (B, d), negatives n (N, d) of `rows`
        (table indices), `owners` (N,) the batch position of each negative's row."""
        raise NotImplementedError

    def teacher_margins(self, rows: list[int], device) -> torch.Tensor:
        """The teacher's margins (positive minus each negative), in the order of the negatives."""
        margins = [scores[0] - s for scores in (self.table.teacher[r] for r in rows) for s in scores[1:]]
        return torch.tensor(margins, dtype=torch.float32, device=device)
