"""Prefect tasks around the training job; `train_then_evaluate` is the step both flows end with."""
from __future__ import annotations

from prefect import task

from embedfactory.config import TrainConfig
from embedfactory.training.job import add_eval_results, train_on_dataset

from embedfactory.store import Store

from .common import SHARD_TASK, picture, progress
from .evaluation import evaluate_model


@task(**{**SHARD_TASK, "persist_result": False}, task_run_name="train-{cfg.base_model}")
def train_model(store: str, dataset_path: str, cfg: TrainConfig, run_token: str) -> dict:
    report = train_on_dataset(store, dataset_path, cfg, run_token, progress("train", unit="steps"))
    if report.get("plot"):
        picture("train-loss", "training loss", Store(store).read_bytes(report["plot"]), report["plot"])
    return report


def train_then_evaluate(store: str, dataset_path: str, cfg: TrainConfig, run_token: str) -> dict:
    """Fine-tune, then score base vs fine-tuned on `cfg.eval_sets` (none: no evaluation)."""
    report = train_model(store, dataset_path, cfg, run_token)
    evaluation = (evaluate_model(store, report["model_path"], cfg.base_model, cfg.eval_sets)
                  if cfg.eval_sets else None)
    if evaluation:
        add_eval_results(store, report["model_path"], evaluation["rows"])  # the card's model-index
    return {**report, "evaluation": evaluation}
