"""Prefect tasks of flow `align`: the domain functions of embedfactory.align.run, each retried once
(transient failures only).
They are idempotent on the store themselves (fingerprinted shards and model markers), so Prefect
keeps no cache of its own here."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from embedfactory.align import run

from .common import worth_retrying

# Prints are not logged here: trl and datasets print progress, and dill (datasets' hashing) reads
# its own disassembly back from stdout, which a logged print would send to the run's log instead.
ALIGN_TASK = {"retries": 1, "retry_delay_seconds": 10, "retry_condition_fn": worth_retrying,
              "cache_policy": NO_CACHE, "persist_result": False, "log_prints": False}

train_role = task(run.train_role, **ALIGN_TASK, task_run_name="train-{role}")
sample_candidates = task(run.candidates, **ALIGN_TASK, task_run_name="candidates")
judge_preferences = task(run.preferences, **ALIGN_TASK, task_run_name="preferences")
judge_junior = task(run.judged, **ALIGN_TASK, task_run_name="judged")
export_gguf = task(run.export_gguf, **ALIGN_TASK, task_run_name="gguf-{role}")
