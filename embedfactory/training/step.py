"""One optimisation step's forward and backward, with or without gradient caching.

Gradient caching (GradCache, Gao et al. 2021; sentence-transformers' Cached* losses) makes the batch
size independent of activation memory: every chunk is first encoded without keeping activations,
the loss and its gradient with respect to the embeddings are computed for the whole batch, then each
chunk is encoded again with activations and back-propagates its slice of that gradient. The random
state of each chunk's first pass is replayed in the second, so dropout masks match and the gradients
equal those of the uncached step.
"""
from __future__ import annotations

from typing import Callable

import torch

from .encoder import Encoder, in_order

Columns = list[list[str]]  # queries, positives, negatives
LossFn = Callable[[list[torch.Tensor]], torch.Tensor]


def forward_backward(encoder: Encoder, columns: Columns, loss_fn: LossFn, cached: bool) -> float:
    """Accumulate the step's gradients into the model; returns the loss."""
    if not cached:
        loss = loss_fn([encoder(texts) for texts in columns])
        loss.backward()
        return loss.item()
    plans = [encoder.chunks(texts) for texts in columns]
    states, leaves = [], []
    with torch.no_grad():
        for texts, plan in zip(columns, plans):
            states.append([])
            parts = []
            for idx in plan:  # the first pass draws its random numbers as an uncached step would
                states[-1].append(_rng_state(encoder))
                parts.append(encoder.forward([texts[i] for i in idx]))
            leaves.append(in_order(parts, plan).requires_grad_())
    loss = loss_fn(leaves)
    loss.backward()
    for texts, plan, chunk_states, leaf in zip(columns, plans, states, leaves):
        for idx, state in zip(plan, chunk_states):
            grad = leaf.grad[torch.tensor(idx, device=leaf.device)]
            _replayed(encoder, state, [texts[i] for i in idx]).backward(grad)
    return loss.item()


def _rng_state(encoder: Encoder) -> tuple:
    cuda = encoder.model.device.type == "cuda"
    return torch.get_rng_state(), torch.cuda.get_rng_state(encoder.model.device) if cuda else None


def _replayed(encoder: Encoder, state: tuple, texts: list[str]) -> torch.Tensor:
    cpu, cuda = state
    devices = [encoder.model.device] if cuda is not None else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, encoder.model.device)
        return encoder.forward(texts)

