"""Prefect task around the training job."""
from __future__ import annotations

from prefect import task

from embedfactory.config import TrainConfig
from embedfactory.training.job import train_on_dataset

from .common import SHARD_TASK, progress


@task(**{**SHARD_TASK, "persist_result": False}, task_run_name="train-{cfg.base_model}")
def train_model(store: str, dataset_path: str, cfg: TrainConfig, run_token: str) -> dict:
    report = progress("train")
    return train_on_dataset(store, dataset_path, cfg, run_token,
                            lambda step, total, loss: report(step, total))
