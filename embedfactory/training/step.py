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


def roles(columns: Columns) -> list[str]:
    """The first column holds queries, the others documents (each gets the model's prompt of that name)."""
    return ["query"] + ["document"] * (len(columns) - 1)


def forward_backward(encoder: Encoder, columns: Columns, loss_fn: LossFn, cached: bool) -> float:
    """Accumulate the step's gradients into the model; returns the loss."""
    if not cached:
        loss = loss_fn([encoder(texts, role) for texts, role in zip(columns, roles(columns))])
        loss.backward()
        return loss.item()
    plans = [encoder.chunks(texts) for texts in columns]
    states, leaves = [], []
    with torch.no_grad():
        for texts, plan, role in zip(columns, plans, roles(columns)):
            states.append([])
            parts = []
            for idx in plan:  # the first pass draws its random numbers as an uncached step would
                states[-1].append(_rng_state(encoder))
                parts.append(encoder.forward([texts[i] for i in idx], role))
            leaves.append(in_order(parts, plan).requires_grad_())
    loss = loss_fn(leaves)
    loss.backward()
    for texts, plan, chunk_states, leaf, role in zip(columns, plans, states, leaves, roles(columns)):
        for idx, state in zip(plan, chunk_states):
            grad = leaf.grad[torch.tensor(idx, device=leaf.device)]
            _replayed(encoder, state, [texts[i] for i in idx], role).backward(grad)
    return loss.item()


def _rng_state(encoder: Encoder) -> tuple:
    cuda = encoder.model.device.type == "cuda"
    return torch.get_rng_state(), torch.cuda.get_rng_state(encoder.model.device) if cuda else None


def _replayed(encoder: Encoder, state: tuple, texts: list[str], role: str | None = None) -> torch.Tensor:
    cpu, cuda = state
    devices = [encoder.model.device] if cuda is not None else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, encoder.model.device)
        return encoder.forward(texts, role)

