"""Fine-tune a sentence-transformers model on a published training set.

Anchors get the instruction prefix (`TrainConfig.query_template`); positives and negatives go in
bare. The loss is InfoNCE over in-batch and hard negatives, or GISTEmbed's guided version when a
guide model is set, averaged over the Matryoshka widths when those are set; batches are shuffled or
semi-homogeneous by task. The guide embeds every distinct text once, before the first step, and is
then looked up (sentence-transformers' GIST losses run it again on every batch of every epoch).
A `Checkpoints` store gets the model, optimizer and random state every `checkpoint_every` steps; a
restarted job resumes after the last one and ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import functools
import random
import time
from typing import Callable, Protocol

import torch

from ..config import TrainConfig
from .encoder import Encoder, load_guide, load_student, pick_device, save_student
from .gist import gist_loss
from .loss import in_batch_infonce
from .sampler import semi_homogeneous_batches
from .step import forward_backward


def query_text(row: dict, template: str) -> str:
    return template.format(instruction=row["instruction"], query=row["anchor"])


def hard_negatives(row: dict, mined: int) -> list[str]:
    """The row's generated negative (if any) and its first `mined` mined ones."""
    generated = [row["negative"]] if row.get("negative") is not None else []
    return generated + list(row.get("mined_negatives") or [])[:mined]


def batches(rows: list[dict], size: int, seed: int, homogeneous_ratio: float | None = None) -> list[list[dict]]:
    if homogeneous_ratio:
        plan = semi_homogeneous_batches(rows, "instruction", size, homogeneous_ratio, seed)
    else:
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        plan = [order[s:s + size] for s in range(0, len(order), size)]
    return [[rows[i] for i in b] for b in plan if len(b) > 1]  # a lone row has no in-batch negative


class Checkpoints(Protocol):
    def load(self) -> dict | None: ...

    def save(self, state: dict) -> None: ...


def train_contrastive(rows: list[dict], cfg: TrainConfig, output_dir: str,
                      progress: Callable[[int, int, float], None] | None = None,
                      checkpoints: Checkpoints | None = None) -> dict:
    """Train and save to `output_dir`; returns the per-step losses and timing."""
    if len(rows) < 2:
        raise ValueError(f"training needs at least 2 rows, got {len(rows)}")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = load_student(cfg, device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    plan = [b for epoch in range(cfg.epochs)
            for b in batches(rows, cfg.batch_size, cfg.seed + epoch, cfg.homogeneous_ratio)]
    started = time.monotonic()  # the guide's pass over the texts counts as training time
    guide = _guide_table(cfg, device, rows)
    encoder = Encoder(model, cfg.mini_batch_size, bf16=cfg.precision == "bf16")
    losses = []
    if checkpoints and (state := checkpoints.load()):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        losses = state["losses"]
    model.train()
    for step in range(len(losses) + 1, len(plan) + 1):
        batch = plan[step - 1]
        columns = [[query_text(r, cfg.query_template) for r in batch], [r["positive"] for r in batch],
                   [n for r in batch for n in hard_negatives(r, cfg.mined_negatives)]]
        guided = [guide(texts) for texts in columns] if guide else None
        loss = forward_backward(encoder, columns, functools.partial(
            batch_loss, cfg, guided=guided, doc_texts=columns[1] + columns[2]), cfg.grad_cache)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(round(loss, 5))
        if checkpoints and step % cfg.checkpoint_every == 0 and step < len(plan):
            checkpoints.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "rng": torch.get_rng_state(), "losses": list(losses)})
        if progress:
            progress(step, len(plan), losses[-1])
    seconds = round(time.monotonic() - started, 2)
    save_student(model, output_dir)
    return {"losses": losses, "steps": len(plan), "rows": len(rows), "device": str(device), "seconds": seconds}


def batch_loss(cfg: TrainConfig, student: list[torch.Tensor], guided: list[torch.Tensor] | None,
               doc_texts: list[str]) -> torch.Tensor:
    """The batch's loss, averaged over the full width and every Matryoshka width."""
    losses = []
    for width in [None, *(cfg.matryoshka_dims or [])]:
        q, p, n = (x[:, :width] if x.numel() else None for x in student)
        if guided is None:
            docs = p if n is None else torch.cat([p, n])
            losses.append(in_batch_infonce(q, docs, doc_texts, cfg.temperature))
        else:
            gq, gp, gn = (g if g.numel() else None for g in guided)
            losses.append(gist_loss(q, p, n, gq, gp, gn, temperature=cfg.temperature,
                                    margin=cfg.gist_margin, strategy=cfg.gist_margin_strategy))
    return torch.stack(losses).mean()


def _guide_table(cfg: TrainConfig, device: torch.device, rows: list[dict]):
    """Guide embeddings of every distinct training text, computed once; a lookup by texts."""
    guide = load_guide(cfg, device)
    if guide is None:
        return None
    texts = sorted({t for r in rows for t in (query_text(r, cfg.query_template), r["positive"],
                                               *hard_negatives(r, cfg.mined_negatives))})
    with torch.no_grad():
        table = Encoder(guide, cfg.mini_batch_size, bf16=cfg.precision == "bf16")(texts)
    index = {t: i for i, t in enumerate(texts)}
    del guide
    return lambda batch: table[[index[t] for t in batch]] if batch else torch.empty(0)
