"""One Prefect task per shard of a synthesis stage (personas, tasks, examples, revised, verdicts), the
duplicates stage's one task, and the task that hands a chain of generation shards to a GPU work pool."""
from __future__ import annotations

from dataclasses import asdict

from prefect import task
from prefect.context import FlowRunContext
from prefect.runtime import task_run

from embedfactory.llm import costs
from embedfactory.report.summary import format_table
from embedfactory.store import ShardRecord, Store
from embedfactory.synth import pipeline

from .common import RETRIES, RETRY_DELAY_S, SHARD_TASK, cache_key, logger, progress, worth_retrying

STAGES = {s.name: s for s in pipeline.SYNTH_STAGES}


def _shard_cache_key(_context, parameters) -> str:
    ctx, stage = parameters["ctx"], STAGES[parameters["stage"]]
    return cache_key(ctx.params.store, ctx.run_id, stage.name, pipeline.fingerprint(
        stage, ctx, parameters["key"], parameters["upstream"], parameters.get("side") or []))


@task(**SHARD_TASK, task_run_name="{stage}-{key}", cache_key_fn=_shard_cache_key)
def run_stage_shard(stage: str, ctx: pipeline.RunContext, key: str, upstream: list[ShardRecord],
                    side: list[ShardRecord] | None = None) -> ShardRecord:
    report = progress(f"{stage} shard {key}", stage=(ctx.run_id, stage, key),
                      shards=pipeline.stage_shards(ctx.params, stage))
    spend = costs.run_spend(ctx.params, ctx.run_id, ctx.run_token) if ctx.params.budget_usd is not None else None
    return pipeline.run_shard(STAGES[stage], ctx, key, upstream, side or [], report, spend)


@task(retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=worth_retrying,
      persist_result=True, task_run_name="duplicates")
def find_duplicates(ctx: pipeline.RunContext, made: list[ShardRecord]) -> list[ShardRecord]:
    """The duplicates stage in one task: it walks the example shards in order against one index read
    once (its shards already committed are reused); each verdict shard reads its record."""
    return pipeline.find_duplicates(ctx, made, progress("duplicates", unit="shards"))


def chain_name(parameters: dict) -> str:
    """'tasks+examples+revised-00003': what a pool run generates, readable in the UI."""
    return f"{'+'.join(parameters['stages'])}-{parameters['key']}"


@task(retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=worth_retrying,
      task_run_name=lambda: f"{chain_name(task_run.parameters)} on pool")
def generate_on_pool(ctx: pipeline.RunContext, key: str, stages: list[str],
                     upstream: list[ShardRecord]) -> list[ShardRecord]:
    """Run `stages` on shard `key` as a flow run of deployment `ctx.params.fan_out` (a GPU work pool)
    and wait; a retry starts a new flow run, which reuses whatever shards the last one committed."""
    from prefect.deployments import run_deployment

    run = run_deployment(ctx.params.fan_out, timeout=None, parameters={
        "params": ctx.params.model_dump(mode="json"), "run_id": ctx.run_id, "run_token": ctx.run_token,
        "key": key, "stages": stages, "upstream": [asdict(u) for u in upstream]})
    if not run.state.is_completed():
        if run.state.name == costs.BudgetExceeded.__name__:  # flows/shard.py names it: not worth a new GPU run
            raise costs.BudgetExceeded(f"{ctx.params.fan_out} run {run.name} for shard {key}: {run.state.message}")
        raise RuntimeError(f"{ctx.params.fan_out} run {run.name} for shard {key} ended {run.state.type.value}")
    return pipeline.committed_chain(ctx, key, stages, upstream)


def project_cost(params, run_id: str, key: str = "synth-projection") -> list[dict]:
    """Before any call: the run's projected calls, tokens and cost per stage (printed and a table
    artifact), with a warning when it is above `params.budget_usd`."""
    from prefect.artifacts import create_table_artifact

    passages = len(pipeline.grounded_passages(params)) if params.grounded.corpus else 0
    rows = costs.projection(params, bool(pipeline.persona_chunks(params)), pipeline.needs_personas(params),
                            costs.store_history(Store(params.store), run_id), passages)
    print(f"projected for run {run_id} (retries add to it):\n"
          + format_table(rows, ["stage", "model", "calls", "prompt_tokens", "completion_tokens", "cost_usd",
                                "tokens_from"]))
    if FlowRunContext.get():
        create_table_artifact(rows, key=key, description=f"Projected LLM cost of {run_id}")
    if warning := costs.over_budget(params, rows):
        logger().warning(warning)
    return rows
