"""Flow `synth-shard`: generation stages of one shard, deployed to a GPU work pool.

Flow `synth` with `fan_out='synth-shard/gpu'` starts one run of this flow for the persona brainstorm
and one per persona chunk (tasks -> examples -> revised). It runs beside the worker's own `vllm serve`
(the generator URL in the parameters is read on this machine) and commits shards to the shared store,
from which the parent reads them back.
"""
from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Failed, State

from embedfactory.config import SynthParams
from embedfactory.llm.costs import BudgetExceeded
from embedfactory.store import ShardRecord
from embedfactory.synth import pipeline
from tasks.common import load_api_keys, load_store_secret, result_storage
from tasks.synthesis import chain_name, run_stage_shard


@flow(name="synth-shard", log_prints=True,
      flow_run_name=lambda: f"{chain_name(flow_run.parameters)} of {flow_run.parameters['run_id']}")
def synth_shard(params: SynthParams, run_id: str, run_token: str, key: str, stages: list[str],
                upstream: list[ShardRecord]) -> State | None:
    """Run `stages` one after another on shard `key` of run `run_id`, each stage reading the previous
    one's shard; already committed shards are reused. A reached budget ends the run Failed with the
    state name 'BudgetExceeded', which flow `synth` reads as that exception (no new GPU run)."""
    load_store_secret(params.store_secret)
    load_api_keys(params.generator, params.revisor, params.brainstormer)
    with pipeline.open_run(params, run_id, run_token) as ctx:
        shard = run_stage_shard.with_options(result_storage=result_storage(params.store))
        try:
            for stage in stages:
                upstream = [shard(stage, ctx, key, upstream)]
        except BudgetExceeded as exc:  # the parent reads the state's name, not its message
            return Failed(message=str(exc), name=BudgetExceeded.__name__)
