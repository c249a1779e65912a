"""The stages wired to the store: fingerprints, idempotent shard runs, sharding. No Prefect here.

A shard's fingerprint hashes everything that shapes its rows: the stage's code, prompt versions,
model ids, sampling, seed, sizes and the checksums of the upstream shards it reads. Run-time knobs
(concurrency, timeouts, endpoint URLs) are left out. A shard already committed with the same
fingerprint is returned as is, so re-running a flow redoes only what is missing or changed.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import pyarrow as pa
from pydantic import BaseModel

from . import filtering, prompts, schemas, task_types
from .config import Endpoint, SynthParams
from .ids import stable_hash
from .llm import client
from .llm.client import ChatClient
from .models import load_embedder
from .stages import brainstorm, common, generate, personas, revise
from .stages.common import ShardOutput
from .store import ShardRecord, StageDir, Store
from .task_types import TASK_SPECS

Progress = Callable[[int, int], None]


class RunContext(BaseModel):
    """What every shard of a run needs; serialisable so a worker elsewhere can rebuild it."""

    params: SynthParams
    run_id: str
    run_token: str  # unique per flow run: tells shards made now from shards reused
    generator_url: str
    revisor_url: str
    generator: Endpoint  # as resolved (the embedded server's structured-output mode applied)
    revisor: Endpoint

    def client(self, role: str) -> ChatClient:
        endpoint, url = ((self.generator, self.generator_url) if role == "generator"
                         else (self.revisor, self.revisor_url))
        synth = self.params.synth
        return ChatClient(endpoint, url, synth.sampling, synth.max_attempts)

    def stage_dir(self, stage: str) -> StageDir:
        return StageDir(Store(self.params.store), self.run_id, stage)


def default_run_id(params: SynthParams) -> str:
    """Same parameters, same run: what makes `make run` twice resume instead of starting over."""
    revisor = params.revisor or params.generator
    return "run-" + stable_hash(params.dataset_name, params.synth.fingerprint_fields(),
                                params.generator.fingerprint_fields(), revisor.fingerprint_fields(),
                                params.filter.fingerprint_fields(), length=10)


@dataclass(frozen=True)
class Stage:
    name: str
    schema: pa.Schema
    upstream: str | None
    inputs: Callable[[SynthParams], dict]  # the parameters that shape this stage's rows
    produce: Callable[[RunContext, str, list[dict], Progress | None], ShardOutput]
    code: tuple  # the modules whose source versions the stage


# What every LLM stage's rows also depend on: output schemas, task types, the client's repair loop.
LLM_CODE = (schemas, task_types, client, common)


@lru_cache(maxsize=None)
def code_version(*modules) -> str:
    return stable_hash(*(inspect.getsource(m) for m in modules), length=12)


def fingerprint(stage: Stage, ctx: RunContext, key: str, upstream: list[ShardRecord]) -> str:
    return stable_hash(stage.name, key, code_version(*stage.code), stage.inputs(ctx.params),
                       sorted(u.sha256 for u in upstream))


def run_shard(stage: Stage, ctx: RunContext, key: str, upstream: list[ShardRecord],
              progress: Progress | None = None) -> ShardRecord:
    """Produce and commit one shard unless it is already committed with the same fingerprint."""
    out_dir = ctx.stage_dir(stage.name)
    fp = fingerprint(stage, ctx, key, upstream)
    if (done := out_dir.committed(key, fp)) is not None:
        return done
    rows = (ctx.stage_dir(stage.upstream).read([u.key for u in upstream]).to_pylist()
            if stage.upstream else [])
    started = time.monotonic()
    out = stage.produce(ctx, key, rows, progress)
    record = ShardRecord(
        key=key, fingerprint=fp, rows=out.passed,
        rejected=out.rejected, dropped=out.dropped,
        rows_in=out.rows_in, llm_calls=out.usage.calls, prompt_tokens=out.usage.prompt_tokens,
        completion_tokens=out.usage.completion_tokens, seconds=round(time.monotonic() - started, 2),
        run_token=ctx.run_token, extra=out.extra)
    return out_dir.commit(pa.Table.from_pylist(out.rows, schema=stage.schema), record)


# ---- the stages ------------------------------------------------------------------------------
def _llm_inputs(params: SynthParams, endpoint: Endpoint, prompt_names: list[str]) -> dict:
    synth = params.synth
    return {"model": endpoint.fingerprint_fields(), "sampling": synth.sampling.fingerprint_fields(),
            "max_attempts": synth.max_attempts, "seed": synth.seed,
            "prompts": {n: prompts.version(n) for n in prompt_names}}


def persona_chunks(params: SynthParams) -> list[str]:
    """Shard keys of the tasks stage (and of every stage after it until the filter)."""
    n, size = params.synth.personas, params.synth.personas_per_shard
    return [f"{i:05d}" for i in range((n + size - 1) // size)]


def _personas(ctx, key, rows, progress):
    return personas.expand_personas(ctx.client("generator"), ctx.params.synth.personas,
                                    ctx.params.synth.seed, progress)


def _tasks(ctx, key, rows, progress):
    size = ctx.params.synth.personas_per_shard
    start = int(key) * size
    chunk = rows[start:start + size]
    synth = ctx.params.synth
    return brainstorm.brainstorm_tasks(ctx.client("generator"), chunk, synth.task_types,
                                       synth.tasks_per_persona, synth.seed, progress)


def _examples(ctx, key, rows, progress):
    synth = ctx.params.synth
    return generate.generate_examples(ctx.client("generator"), rows, synth.examples_per_task,
                                      synth.seed, synth.max_num_words, progress)


def _revised(ctx, key, rows, progress):
    if not ctx.params.synth.revise:
        return revise.skip_revision(rows)
    return revise.revise_examples(ctx.client("revisor"), rows, ctx.params.synth.seed, progress)


def _verdicts(ctx, key, rows, progress):
    embed = filtering.encoder(load_embedder(ctx.params.filter.model))
    verdicts = filtering.ranking_consistency(rows, embed, ctx.params.filter.topk)
    out = [{**row, **v} for row, v in zip(rows, verdicts)]
    return ShardOutput(rows=out, rows_in=len(rows), dropped=sum(not v["kept"] for v in verdicts))


PERSONAS = Stage(
    "personas", schemas.PERSONAS, None,
    lambda p: {"count": p.synth.personas, **_llm_inputs(p, p.generator, [personas.PROMPT])},
    _personas, (personas, *LLM_CODE))
TASKS = Stage(
    "tasks", schemas.TASKS, "personas",
    lambda p: {"task_types": p.synth.task_types, "per_persona": p.synth.tasks_per_persona,
               "personas_per_shard": p.synth.personas_per_shard,
               **_llm_inputs(p, p.generator, ["persona_system"] + [
                   TASK_SPECS[t].brainstorm_prompt for t in p.synth.task_types])},
    _tasks, (brainstorm, *LLM_CODE))
EXAMPLES = Stage(
    "examples", schemas.EXAMPLES, "tasks",
    lambda p: {"per_task": p.synth.examples_per_task, "max_num_words": p.synth.max_num_words,
               **_llm_inputs(p, p.generator, [TASK_SPECS[t].generate_prompt for t in p.synth.task_types])},
    _examples, (generate, *LLM_CODE))
REVISED = Stage(
    "revised", schemas.REVISED, "examples",
    lambda p: {"revise": p.synth.revise,
               **(_llm_inputs(p, p.revisor or p.generator, [revise.PROMPT]) if p.synth.revise else {})},
    _revised, (revise, *LLM_CODE))
VERDICTS = Stage(
    "verdicts", schemas.VERDICTS, "revised", lambda p: p.filter.fingerprint_fields(), _verdicts,
    (filtering,))

SYNTH_STAGES = [PERSONAS, TASKS, EXAMPLES, REVISED, VERDICTS]
