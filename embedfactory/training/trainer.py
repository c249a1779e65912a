"""Fine-tune a sentence-transformers model on a published training set.

Anchors get the instruction prefix (`TrainConfig.query_template`); positives and negatives go in
bare. The loss is InfoNCE over in-batch and hard negatives, or GISTEmbed's guided version when a
guide model is set; batches are shuffled or semi-homogeneous by task. The loss curve is returned so
flows can report it.
"""
from __future__ import annotations

import random
import time
from typing import Callable

import torch

from ..config import TrainConfig
from ..models import embedding_model_path
from .gist import gist_loss
from .loss import in_batch_infonce
from .sampler import semi_homogeneous_batches


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


def train_contrastive(rows: list[dict], cfg: TrainConfig, output_dir: str,
                      progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Train and save to `output_dir`; returns the per-step losses and timing."""
    from sentence_transformers import SentenceTransformer

    if len(rows) < 2:
        raise ValueError(f"training needs at least 2 rows, got {len(rows)}")
    torch.manual_seed(cfg.seed)
    model = SentenceTransformer(embedding_model_path(cfg.base_model), device="cpu")
    model.max_seq_length = cfg.max_seq_length
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    guide = (SentenceTransformer(embedding_model_path(cfg.guide_model), device="cpu").eval()
             if cfg.guide_model else None)
    plan = [b for epoch in range(cfg.epochs)
            for b in batches(rows, cfg.batch_size, cfg.seed + epoch, cfg.homogeneous_ratio)]
    losses, started = [], time.monotonic()
    model.train()
    for step, batch in enumerate(plan, start=1):
        queries = [query_text(r, cfg.query_template) for r in batch]
        positives = [r["positive"] for r in batch]
        negatives = [n for r in batch for n in hard_negatives(r, cfg.mined_negatives)]
        if guide is None:
            docs = _embed(model, positives + negatives)
            loss = in_batch_infonce(_embed(model, queries), docs, positives + negatives, cfg.temperature)
        else:
            with torch.no_grad():
                guided = [_embed(guide, texts) if texts else None for texts in (queries, positives, negatives)]
            student = [_embed(model, texts) if texts else None for texts in (queries, positives, negatives)]
            loss = gist_loss(*student, *guided, temperature=cfg.temperature, margin=cfg.gist_margin,
                             strategy=cfg.gist_margin_strategy)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(round(loss.item(), 5))
        if progress:
            progress(step, len(plan), losses[-1])
    model.save(output_dir)
    return {"losses": losses, "steps": len(plan), "rows": len(rows),
            "seconds": round(time.monotonic() - started, 2)}


def _embed(model, texts: list[str]) -> torch.Tensor:
    features = model.preprocess(texts)
    features = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in features.items()}
    return model(features)["sentence_embedding"]
