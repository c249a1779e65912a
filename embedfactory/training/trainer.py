"""Fine-tune a sentence-transformers model on a published training set.

Anchors get the instruction prefix (`TrainConfig.query_template`); positives and negatives go in
bare, and the saved model carries the prefix as its "query" prompt (`TrainConfig.query_prompt`). The
loss (`TrainConfig.loss`) is InfoNCE over in-batch and hard negatives, GISTEmbed's guided version, or
MarginMSE against a teacher's score margins, averaged over the Matryoshka widths when those are set;
batches are shuffled or semi-homogeneous by task. The guide embeds every distinct text once, before
the first step, and is then looked up (sentence-transformers' GIST losses run it again on every batch
of every epoch). MarginMSE takes the rows' `teacher_scores` column where it is set (the teacher's
score of the positive, then of each hard negative, in `hard_negatives` order) and scores the other
rows with the teacher before the first step; rows without a hard negative are left out.
A `Checkpoints` store gets the model, optimizer and random state every `checkpoint_every` steps; a
restarted job resumes after the last one and ends with the same weights as an uninterrupted run.
`epoch_end(epoch, model)` is called after each epoch but the last (e.g. to keep snapshots for choosing
the number of epochs on a dev set); it must not change the model.
"""
from __future__ import annotations

import functools
import math
import random
import time
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..models import hub_id
from .encoder import Encoder, guide_lookup, load_guide, load_student, pick_device, save_student
from .gist import gist_loss
from .loss import in_batch_infonce
from .listwise import listwise_kl_loss
from .margin import margin_mse_loss, student_margins
from .sampler import semi_homogeneous_batches
from .step import forward_backward, roles
from .teacher import teacher_scores


def query_text(row: dict, template: str) -> str:
    return template.format(instruction=row["instruction"], query=row["anchor"])


def hard_negatives(row: dict, mined: int | None) -> list[str]:
    """The row's generated negative (if any) and its first `mined` mined ones (None: all of them)."""
    generated = [row["negative"]] if row.get("negative") is not None else []
    return generated + list(row.get("mined_negatives") or [])[:mined]


def batches(rows: list[dict], size: int, seed: int, homogeneous_ratio: float | None = None,
            key: str = "task_type") -> list[list[dict]]:
    if homogeneous_ratio:
        if missing := sum(not r.get(key) for r in rows):
            raise ValueError(f"homogeneous_ratio groups rows by {key!r}, which {missing} of {len(rows)} "
                             "rows lack; set homogeneous_key to a column the data has")
        plan = semi_homogeneous_batches(rows, key, size, homogeneous_ratio, seed)
    else:
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        plan = [order[s:s + size] for s in range(0, len(order), size)]
    return [[rows[i] for i in b] for b in plan if len(b) > 1]  # a lone row has no in-batch negative


def random_state() -> dict:
    """Every random state training draws from: torch's CPU generator (dropout on CPU), each CUDA
    device's (dropout on GPU), and Python's and NumPy's global ones (libraries may use them). The
    batches themselves are planned from `cfg.seed`, so a resumed run replays the same batches."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"rng": torch.get_rng_state(), "python_rng": random.getstate(),  # plain types: weights_only loads them
             "numpy_rng": (name, keys.tolist(), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict) -> None:
    torch.set_rng_state(state["rng"])
    if "python_rng" in state:
        random.setstate(state["python_rng"])
    if "numpy_rng" in state:
        name, keys, pos, has_gauss, cached = state["numpy_rng"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


class Checkpoints(Protocol):
    def load(self) -> dict | None: ...

    def save(self, state: dict) -> None: ...


def train_contrastive(rows: list[dict], cfg: TrainConfig, output_dir: str,
                      progress: Callable[[int, int, float], None] | None = None,
                      checkpoints: Checkpoints | None = None,
                      epoch_end: Callable[[int, object], None] | None = None) -> dict:
    """Train and save to `output_dir`; returns the per-step losses and timing."""
    if len(rows) < 2:
        raise ValueError(f"training needs at least 2 rows, got {len(rows)}")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = load_student(cfg, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
    started = time.monotonic()  # the guide's and the teacher's passes over the texts count as training time
    given = len(rows)
    if cfg.distils:
        rows = with_teacher_scores(cfg, device, rows)
    epochs = [batches(rows, cfg.batch_size, cfg.seed + epoch, cfg.homogeneous_ratio, cfg.homogeneous_key)
              for epoch in range(cfg.epochs)]
    plan = [b for epoch in epochs for b in epoch]
    ends = {sum(map(len, epochs[:e])): e for e in range(1, cfg.epochs)}  # last step of epoch e -> e
    guide = _guide_table(cfg, device, rows)
    encoder = Encoder(model, cfg.mini_batch_size, bf16=cfg.precision == "bf16")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, len(plan)))
    losses = []
    if checkpoints and (state := checkpoints.load()):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        restore_random_state(state)
        losses = state["losses"]
    model.train()
    for step in range(len(losses) + 1, len(plan) + 1):
        batch = plan[step - 1]
        columns = [[query_text(r, cfg.query_template) for r in batch], [r["positive"] for r in batch],
                   [n for r in batch for n in hard_negatives(r, cfg.mined_negatives)]]
        guided = [guide(texts, role) for texts, role in zip(columns, roles(columns))] if guide else None
        teacher = _teacher_margins(batch, device) if cfg.distils else None
        loss = forward_backward(encoder, columns, functools.partial(
            batch_loss, cfg, guided=guided, doc_texts=columns[1] + columns[2], teacher=teacher), cfg.grad_cache)
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(round(loss, 5))
        if checkpoints and step % cfg.checkpoint_every == 0 and step < len(plan):
            checkpoints.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(),
                              **random_state(), "losses": list(losses)})
        if progress:
            progress(step, len(plan), losses[-1])
        if epoch_end and step in ends:
            epoch_end(ends[step], model)
            model.train()
    seconds = round(time.monotonic() - started, 2)
    save_student(model, output_dir, cfg.query_prompt(), hub_id(cfg.base_model), ("synthetic-data", cfg.loss))
    return {"losses": losses, "steps": len(plan), "rows": len(rows), "skipped_rows": given - len(rows),
            "device": str(device), "seconds": seconds}


def lr_factor(cfg: TrainConfig, steps: int) -> Callable[[int], float]:
    """The learning rate's multiplier before optimizer step i (0-based): a linear rise over the first
    `warmup_ratio` of the steps, then constant or a linear fall to 0 after the last step."""
    warmup = math.ceil(cfg.warmup_ratio * steps)

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / (warmup + 1)
        if cfg.lr_schedule == "linear":
            return max(0.0, (steps - i) / max(1, steps - warmup))
        return 1.0
    return factor


def with_teacher_scores(cfg: TrainConfig, device: torch.device, rows: list[dict]) -> list[dict]:
    """The rows that have a hard negative, each with `teacher_scores` for its positive and its hard
    negatives: the row's own column where set, else scored now by `cfg.teacher_model`."""
    kept = [r for r in rows if hard_negatives(r, cfg.mined_negatives)]
    if len(kept) < 2:
        raise ValueError(f"margin_mse needs at least 2 rows with a hard negative, got {len(kept)}")
    missing = [r for r in kept if r.get("teacher_scores") is None]
    scored = iter(teacher_scores(missing, cfg.teacher_model, "{query}", cfg.mined_negatives,
                                 cfg.mini_batch_size, device=str(device)) if missing else [])
    out = []
    for row in kept:
        scores = list(row["teacher_scores"]) if row.get("teacher_scores") is not None else next(scored)
        needed = 1 + len(hard_negatives(row, cfg.mined_negatives))
        if len(scores) < needed:
            raise ValueError(f"row with anchor {row['anchor']!r} has {len(scores)} teacher_scores; it needs "
                             f"{needed}: the positive's, then each hard negative's")
        out.append({**row, "teacher_scores": scores[:needed]})
    return out


def _teacher_margins(batch: list[dict], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's margins (positive minus each hard negative) and each negative's row, in the
    order of the batch's negatives column."""
    margins, owners = [], []
    for i, row in enumerate(batch):
        positive, *negatives = row["teacher_scores"]
        margins += [positive - s for s in negatives]
        owners += [i] * len(negatives)
    return (torch.tensor(margins, dtype=torch.float32, device=device),
            torch.tensor(owners, dtype=torch.long, device=device))


def batch_loss(cfg: TrainConfig, student: list[torch.Tensor], guided: list[torch.Tensor] | None,
               doc_texts: list[str], teacher: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The batch's loss, averaged over the full width and every Matryoshka width (weighted by
    `matryoshka_weights` when set). `teacher`: the
    teacher's margins and the row of each negative (MarginMSE)."""
    losses = []
    for width in [None, *(cfg.matryoshka_dims or [])]:
        q, p, n = (x[:, :width] if x.numel() else None for x in student)
        if cfg.loss == "margin_mse":
            q, p, n = (F.normalize(x, dim=-1) for x in (q, p, n))  # cosine, as a bi-encoder teacher scores
            losses.append(margin_mse_loss(q, p, n, *teacher))
        elif cfg.loss == "margin_mse_infonce":  # both in logits: cosine / temperature
            tau = cfg.softmax_temperature()
            margins, owners = teacher
            q, p, n = (F.normalize(x, dim=-1) for x in (q, p, n))
            losses.append(in_batch_infonce(q, torch.cat([p, n]), doc_texts, tau)
                          + margin_mse_loss(q / tau, p, n, margins / tau, owners))
        elif cfg.loss == "kl_infonce":  # InfoNCE plus the teacher's ranking of each row's list, same temperature
            tau = cfg.softmax_temperature()
            margins, owners = teacher
            q, p, n = (F.normalize(x, dim=-1) for x in (q, p, n))
            losses.append(in_batch_infonce(q, torch.cat([p, n]), doc_texts, tau)
                          + listwise_kl_loss(student_margins(q, p, n, owners) / tau, margins / tau, owners, len(q)))
        elif guided is None:
            docs = p if n is None else torch.cat([p, n])
            losses.append(in_batch_infonce(q, docs, doc_texts, cfg.softmax_temperature()))
        else:
            gq, gp, gn = (g if g.numel() else None for g in guided)
            losses.append(gist_loss(q, p, n, gq, gp, gn, temperature=cfg.softmax_temperature(),
                                    margin=cfg.gist_margin, strategy=cfg.gist_margin_strategy))
    weights = torch.tensor(cfg.matryoshka_weights or [1.0] * len(losses), device=losses[0].device)
    return (torch.stack(losses) * weights).sum() / weights.sum()


def _guide_table(cfg: TrainConfig, device: torch.device, rows: list[dict]):
    """Guide embeddings of every distinct training query (its query prompt) and document (its document
    prompt), computed once; a lookup by (texts, role)."""
    guide = load_guide(cfg, device)
    if guide is None:
        return None
    return guide_lookup(guide, [query_text(r, cfg.query_template) for r in rows],
                        [t for r in rows for t in (r["positive"], *hard_negatives(r, cfg.mined_negatives))],
                        cfg.mini_batch_size, bf16=cfg.precision == "bf16")
