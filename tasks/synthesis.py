"""One Prefect task per shard of a synthesis stage (personas, tasks, examples, revised, verdicts)."""
from __future__ import annotations

from embedfactory import pipeline
from embedfactory.store import ShardRecord

from prefect import task

from .common import SHARD_TASK, cache_key, progress

STAGES = {s.name: s for s in pipeline.SYNTH_STAGES}


def _shard_cache_key(_context, parameters) -> str:
    ctx, stage = parameters["ctx"], STAGES[parameters["stage"]]
    return cache_key(ctx.params.store, ctx.run_id, stage.name, pipeline.fingerprint(
        stage, ctx, parameters["key"], parameters["upstream"], parameters.get("side") or []))


@task(**SHARD_TASK, task_run_name="{stage}-{key}", cache_key_fn=_shard_cache_key)
def run_stage_shard(stage: str, ctx: pipeline.RunContext, key: str, upstream: list[ShardRecord],
                    side: list[ShardRecord] | None = None) -> ShardRecord:
    return pipeline.run_shard(STAGES[stage], ctx, key, upstream, side or [], progress(f"{stage} shard {key}"))
