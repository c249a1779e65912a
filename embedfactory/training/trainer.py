"""Fine-tune a sentence-transformers model on a published training set, with sentence-transformers'
`SentenceTransformerTrainer`.

Anchors get the instruction prefix (`TrainConfig.query_template`); positives and negatives go in
bare, and the saved model carries the prefix as its "query" prompt (`TrainConfig.query_prompt`). The
loss (`TrainConfig.loss`) is InfoNCE over in-batch and hard negatives (`loss.InfoNCELoss`), GISTEmbed's
guided version (`gist.GISTLoss`), MarginMSE against a teacher's score margins, alone or beside InfoNCE
(`margin.MarginMSELoss`), or listwise distillation beside InfoNCE (`listwise.ListwiseKLLoss`); with
Matryoshka widths it is wrapped in sentence-transformers' `MatryoshkaLoss`. Batches are shuffled or
semi-homogeneous by task (`sampler.RowBatchSampler`). The guide embeds every distinct text once, before
the first step. The distilling losses take the rows' `teacher_scores` column where it is set (the
teacher's score of the positive, then of each hard negative, in `hard_negatives` order) and score the
other rows with the teacher before the first step; rows without a hard negative are left out.

The Trainer owns the optimisation: AdamW, warm-up and the schedule, clipping, bf16, gradient
checkpointing, checkpoints
every `checkpoint_every` steps with every random state, resume, logging (TensorBoard or W&B when
installed). Gradient caching is sentence-transformers' GradCache machinery (`rowloss.py`). Launched by
`torchrun` or `accelerate launch` with several processes, the same call trains with DDP: each process
takes `batch_size / processes` rows of every step's batch, the losses gather the embeddings of all, and
the first process alone writes the model and the checkpoints.

A `Checkpoints` store gets the latest checkpoint folder; a restarted job resumes from it and ends with
the same weights as an uninterrupted run. `epoch_end(epoch, model)` is called after each epoch but the
last (e.g. to keep snapshots for choosing the number of epochs on a dev set); it must not change the model.
"""
from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Protocol

import torch
from transformers import TrainerCallback

from ..config import TrainConfig
from ..models import hub_id
from .data import RowCollator, RowTable, hard_negatives, query_text
from .encoder import load_guide, load_student, pick_device, save_student
from .gist import GISTLoss, GuideTable
from .listwise import ListwiseKLLoss
from .loss import InfoNCELoss
from .margin import MarginMSELoss
from .sampler import RowBatchSampler, batches
from .teacher import teacher_scores

__all__ = ["train_contrastive", "with_teacher_scores", "hard_negatives", "query_text", "Checkpoints"]


class Checkpoints(Protocol):
    """Where a job's latest checkpoint folder is kept between runs."""

    def load(self, into: str) -> str | None: ...  # the restored folder under `into`, or None

    def save(self, folder: str) -> None: ...


def train_contrastive(rows: list[dict], cfg: TrainConfig, output_dir: str,
                      progress: Callable[[int, int, float], None] | None = None,
                      checkpoints: Checkpoints | None = None,
                      epoch_end: Callable[[int, object], None] | None = None,
                      checkpoint_dir: str | None = None, card: dict | None = None) -> dict:
    """Train and save to `output_dir`; returns the per-step losses and timing. `checkpoint_dir`: the
    Trainer's own folder (several processes share one; default a temporary folder). `card`: fields of
    the saved model's `SentenceTransformerModelCardData` (e.g. `model_name`, `train_datasets`, `license`)."""
    from sentence_transformers import SentenceTransformerTrainer

    if len(rows) < 2:
        raise ValueError(f"training needs at least 2 rows, got {len(rows)}")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = load_student(cfg, device)
    model.model_card_data.local_files_only = True  # nothing is looked up on the Hub
    for name, value in (card or {}).items():
        setattr(model.model_card_data, name, value)
    started = time.monotonic()  # the guide's and the teacher's passes over the texts count as training time
    given = len(rows)
    if cfg.distils:
        rows = with_teacher_scores(cfg, device, rows)
    table = RowTable.from_rows(rows, cfg.query_template, cfg.mined_negatives, cfg.homogeneous_key, cfg.distils)
    hooks = _Hooks(progress, checkpoints, epoch_end, model)
    with contextlib.ExitStack() as stack:
        work = checkpoint_dir or stack.enter_context(tempfile.TemporaryDirectory())
        trainer = SentenceTransformerTrainer(
            model=model, args=training_arguments(cfg, device, work, steps=cfg.epochs * len(
                batches(rows, cfg.batch_size, cfg.seed, cfg.homogeneous_ratio, cfg.homogeneous_key))),
            train_dataset=table.dataset(),
            loss=make_loss(cfg, model, table, device),
            data_collator=RowCollator(model.preprocess, prompts={
                "anchor": model.prompts.get("query"), "positive": model.prompts.get("document"),
                "negatives": model.prompts.get("document")}),
            callbacks=[hooks])
        trainer.args.batch_sampler = functools.partial(
            RowBatchSampler, rows=rows, homogeneous_ratio=cfg.homogeneous_ratio, key=cfg.homogeneous_key)
        trainer.train(resume_from_checkpoint=_restored(trainer, checkpoints, work))
        logged = [entry for entry in trainer.state.log_history if "loss" in entry]  # one per step
        first = trainer.is_world_process_zero()
        if first:
            save_student(model, output_dir, cfg.query_prompt(), hub_id(cfg.base_model), ("synthetic-data", cfg.loss))
    return {"losses": [e["loss"] for e in logged], "learning_rates": [e["learning_rate"] for e in logged],
            "steps": trainer.state.global_step, "rows": len(rows), "skipped_rows": given - len(rows),
            "device": str(device), "seconds": round(time.monotonic() - started, 2),
            "rank": trainer.args.process_index, "wrote_model": first, "checkpoint_saves": hooks.saves}


def _restored(trainer, checkpoints: Checkpoints | None, work: str) -> str | None:
    """The checkpoint folder to resume from: the store's, unpacked by the first process for all."""
    if checkpoints is None:
        return None
    if trainer.is_world_process_zero():
        checkpoints.load(work)
    trainer.accelerator.wait_for_everyone()
    found = sorted(Path(work).glob("checkpoint-*"), key=lambda f: int(f.name.split("-")[1]))
    return str(found[-1]) if found else None


def training_arguments(cfg: TrainConfig, device: torch.device, output_dir: str, steps: int):
    """The Trainer's arguments for `cfg` and a run of `steps` steps: the step's batch is `cfg.batch_size`
    rows over all processes. Warm-up: the whole steps within `warmup_ratio` of the run (the Trainer's
    warm-up starts from a rate of 0, so a run of a few steps gets none rather than losing its first)."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun and accelerate launch
    if cfg.batch_size % processes:
        raise ValueError(f"batch_size {cfg.batch_size} does not divide among {processes} processes")
    return SentenceTransformerTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=cfg.batch_size // processes,
        num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate, weight_decay=0.01,
        warmup_steps=int(cfg.warmup_ratio * steps), lr_scheduler_type="linear" if cfg.lr_schedule == "linear" else
        "constant_with_warmup", max_grad_norm=cfg.max_grad_norm or 0.0, seed=cfg.seed, data_seed=cfg.seed,
        bf16=cfg.precision == "bf16", activation_checkpointing=cfg.gradient_checkpointing, use_cpu=device.type == "cpu", ddp_backend="gloo" if processes > 1 and device.type == "cpu" else None,
        save_strategy="steps", save_steps=cfg.checkpoint_every, save_total_limit=1, save_only_model=False,
        logging_steps=1, report_to="all", disable_tqdm=True, dataloader_drop_last=False)


def make_loss(cfg: TrainConfig, model, table: RowTable, device: torch.device):
    """The loss module of `cfg.loss` (see the module docstring), Matryoshka-wrapped when widths are set."""
    common = dict(cached=cfg.grad_cache, mini_batch_size=cfg.mini_batch_size)
    tau = cfg.softmax_temperature()
    if cfg.loss in ("margin_mse", "margin_mse_infonce"):
        loss = MarginMSELoss(model, table, tau, infonce=cfg.loss == "margin_mse_infonce", **common)
    elif cfg.loss == "kl_infonce":
        loss = ListwiseKLLoss(model, table, tau, **common)
    elif (guide := load_guide(cfg, device)) is not None:
        loss = GISTLoss(model, table, GuideTable(guide, table, cfg.mini_batch_size), tau, cfg.gist_margin,
                        cfg.gist_margin_strategy, **common)
    else:
        loss = InfoNCELoss(model, table, tau, **common)
    if not cfg.matryoshka_dims:
        return loss
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    weights = cfg.matryoshka_weights or [1.0] * (1 + len(cfg.matryoshka_dims))
    return MatryoshkaLoss(model, loss, [model.get_embedding_dimension(), *cfg.matryoshka_dims],
                          [w / sum(weights) for w in weights])


class _Hooks(TrainerCallback):
    """The caller's view of the Trainer: each step's loss to `progress`, each saved checkpoint to the
    `Checkpoints` store (first process only), each finished epoch but the last to `epoch_end`."""

    def __init__(self, progress, checkpoints, epoch_end, model):
        self.progress, self.checkpoints, self.epoch_end, self.model = progress, checkpoints, epoch_end, model
        self.saves = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress and logs and "loss" in logs:
            self.progress(state.global_step, state.max_steps, logs["loss"])

    def on_save(self, args, state, control, **kwargs):
        if self.checkpoints and state.is_world_process_zero and state.global_step < state.max_steps:
            self.checkpoints.save(f"{args.output_dir}/checkpoint-{state.global_step}")
            self.saves += 1

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch = round(state.epoch)
        if self.epoch_end and epoch < args.num_train_epochs:
            self.epoch_end(epoch, self.model)
            self.model.train()


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


