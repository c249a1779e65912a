"""The stages wired to the store: fingerprints, idempotent shard runs, sharding. No Prefect here.

A shard's fingerprint hashes everything that shapes its rows: the stage's code, prompt versions,
model ids, sampling, seed, sizes and the checksums of the upstream shards it reads. Run-time knobs
(concurrency, timeouts, endpoint URLs) are left out. A shard already committed with the same
fingerprint is returned as is, so re-running a flow redoes only what is missing or changed.
"""
from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa
from pydantic import BaseModel

from .. import prompts, schemas, task_types
from ..config import Endpoint, SynthParams
from ..filter import consistency, gates, search
from ..ids import code_version, stable_hash
from ..llm import client, costs, replylog
from ..llm.client import ChatClient
from ..report import economics, quality
from ..store import ShardRecord, StageDir, Store
from ..task_types import TASK_SPECS
from . import (
    brainstorm,
    common,
    documents,
    duplicates,
    generate,
    grounded,
    personas,
    revise,
    sources,
    verdicts,
)
from .common import ShardOutput
from .verdicts import corpus_keys

Progress = Callable[[int, int], None]


class RunContext(BaseModel):
    """What every shard of a run needs; serialisable so a worker elsewhere can rebuild it."""

    params: SynthParams
    run_id: str
    run_token: str  # unique per flow run: tells shards made now from shards reused
    generator_url: str
    revisor_url: str
    generator: Endpoint  # as resolved (the embedded server's slot count as concurrency)
    revisor: Endpoint
    brainstormer: Endpoint | None = None  # None: the generator
    brainstormer_url: str | None = None

    def client(self, role: str) -> ChatClient:
        """The client of a role: 'generator' (examples, grounded queries), 'brainstormer' (personas,
        tasks) or 'revisor'."""
        endpoint, url = {"generator": (self.generator, self.generator_url),
                         "brainstormer": (self.brainstormer or self.generator,
                                          self.brainstormer_url or self.generator_url),
                         "revisor": (self.revisor, self.revisor_url)}[role]
        synth = self.params.synth
        return ChatClient(endpoint, url, synth.sampling, synth.max_attempts)  # the client resolves the token cap

    def stage_dir(self, stage: str) -> StageDir:
        return StageDir(Store(self.params.store), self.run_id, stage)


@contextlib.contextmanager
def open_run(params: SynthParams, run_id: str, run_token: str, serve: bool = True):
    """The RunContext of a run, its model servers up for the duration (the embedded one started, a
    remote one checked). `serve=False`: no LLM is touched here (generation runs on other workers)."""
    from ..llm.server import serving

    with contextlib.ExitStack() as servers:
        generator, generator_url = (servers.enter_context(serving(params.generator)) if serve
                                    else (params.generator, params.generator.base_url))

        def own(endpoint: Endpoint | None) -> tuple[Endpoint, str]:
            """A role's endpoint as served; the generator's when unset or the same endpoint."""
            if endpoint is None or endpoint == params.generator:
                return generator, generator_url
            return servers.enter_context(serving(endpoint)) if serve else (endpoint, endpoint.base_url)

        revisor, revisor_url = own(params.revisor)
        brainstormer, brainstormer_url = own(params.brainstormer)
        yield RunContext(params=params, run_id=run_id, run_token=run_token, generator=generator,
                         generator_url=generator_url, revisor=revisor, revisor_url=revisor_url,
                         brainstormer=brainstormer, brainstormer_url=brainstormer_url)


def committed_chain(ctx: RunContext, key: str, stages: list[str], upstream: list[ShardRecord]) -> list[ShardRecord]:
    """The records of `stages` run one after another on shard `key` (as another worker ran them),
    checked against the fingerprints this run expects."""
    by_name = {s.name: s for s in SYNTH_STAGES}
    records = []
    for name in stages:
        record = ctx.stage_dir(name).committed(key, fingerprint(by_name[name], ctx, key, upstream))
        if record is None:
            raise RuntimeError(f"shard {name}/{key} of run {ctx.run_id} is not committed")
        records.append(record)
        upstream = [record]
    return records


def default_run_id(params: SynthParams) -> str:
    """Same parameters, same run: what makes `make run` twice resume instead of starting over."""
    revisor = params.revisor or params.generator
    brainstormer = [] if params.brainstormer is None else [params.brainstormer.fingerprint_fields()]
    return "run-" + stable_hash(params.dataset_name, params.synth.fingerprint_fields(),
                                params.generator.fingerprint_fields(), revisor.fingerprint_fields(), *brainstormer,
                                params.filter.fingerprint_fields(), params.grounded.fingerprint_fields(),
                                length=10)


@dataclass(frozen=True)
class Stage:
    name: str
    schema: pa.Schema
    upstream: str | None
    inputs: Callable[[SynthParams], dict]  # the parameters that shape this stage's rows
    produce: Callable[..., ShardOutput]  # (ctx, key, rows, side, progress)
    code: tuple  # the modules whose source versions the stage


# What every LLM stage's rows also depend on: output schemas, task types, the client's repair loop.
LLM_CODE = (schemas, task_types, client, common)


def fingerprint(stage: Stage, ctx: RunContext, key: str, upstream: list[ShardRecord],
                side: list[ShardRecord] = ()) -> str:
    return stable_hash(stage.name, key, code_version(*stage.code), inspect.getsource(stage.produce),
                       stage.inputs(ctx.params),
                       sorted(u.sha256 for u in upstream), sorted(s.sha256 for s in side),
                       None)  # where inputs from outside the run went: kept, so committed shards stay valid


def run_shard(stage: Stage, ctx: RunContext, key: str, upstream: list[ShardRecord],
              side: list[ShardRecord] = (), progress: Progress | None = None,
              spend: costs.Spend | None = None) -> ShardRecord:
    """Produce and commit one shard unless it is already committed with the same fingerprint.
    `upstream`: the shards whose rows are the input; `side`: shards it also consults (their
    checksums enter the fingerprint; the stage reads them itself). `spend`: the run's budget, checked
    before the shard and before each of its requests (llm/costs.py). A reused shard reports itself done."""
    out_dir = ctx.stage_dir(stage.name)
    fp = fingerprint(stage, ctx, key, upstream, side)
    if (done := out_dir.committed(key, fp)) is not None:
        if progress is not None:
            progress(done.rows_in, done.rows_in)
        return done
    if spend is not None:
        spend.check()
    rows = [row for u in upstream for row in ctx.stage_dir(u.stage or stage.upstream).read([u.key]).to_pylist()]
    started = time.monotonic()
    with replylog.for_shard(out_dir.store, reply_folder(out_dir, key)), costs.active(spend):
        out = stage.produce(ctx, key, rows, list(side), progress)
        return commit_output(out_dir, key, fp, out, ctx.run_token, started, stage.schema)


def reply_folder(out_dir: StageDir, key: str) -> str:
    """Where a shard's replies wait until it commits (a failed try's paid replies serve the next)."""
    return f"{out_dir.dir}/_replies/{key}"


def commit_output(out_dir: StageDir, key: str, fp: str, out: ShardOutput, run_token: str, started: float,
                  schema: pa.Schema | None = None) -> ShardRecord:
    """Commit a produced shard with its record (counts, LLM cost, seconds since `started`)."""
    record = ShardRecord(
        key=key, fingerprint=fp, rows=out.passed, stage=out_dir.stage,
        rejected=out.rejected, dropped=out.dropped,
        rows_in=out.rows_in, llm_calls=out.usage.calls, prompt_tokens=out.usage.prompt_tokens,
        completion_tokens=out.usage.completion_tokens, cached_tokens=out.usage.cached_tokens,
        schema_fallbacks=out.usage.schema_fallbacks, seconds=round(time.monotonic() - started, 2),
        run_token=run_token, extra=out.extra)
    return out_dir.commit(pa.Table.from_pylist(out.rows, schema=schema), record)


def find_duplicates(ctx: RunContext, made: list[ShardRecord], progress: Progress | None = None) -> list[ShardRecord]:
    """The duplicates stage (duplicates.py) over the example shards, in their order: one
    record per shard, a side input of its verdict shard."""
    return duplicates.find(ctx.params, ctx.run_id, ctx.run_token, made, progress)


def run_quality(ctx: RunContext, records: dict[str, list[ShardRecord]]) -> dict:
    """The run's data-quality report (see report/quality.py), over all its shards."""
    rows = {s.name: ctx.stage_dir(s.name).read([r.key for r in records[s.name]], ok_only=False,
                                               columns=quality.COLUMNS).to_pylist()
            for s in SYNTH_STAGES if s is not CORPUS and records.get(s.name)}  # corpus rows: embeddings
    models = {**costs.stage_models(ctx.params), "corpus": ctx.params.filter.model, "verdicts": ctx.params.filter.model}
    generator, brainstormer = models["examples"], models["personas"]
    usage = costs.usage_table(records, models, ctx.params.prices)
    generated = sum(r.rows for stage in ("examples", "grounded") for r in records.get(stage, []))
    # a brainstormer of its own is SPEED's teacher: its persona and task calls count as teacher calls
    brainstormed = (sum(r.llm_calls for stage in ("personas", "tasks") for r in records.get(stage, []))
                    if ctx.brainstormer is not None and brainstormer not in (generator, ctx.revisor.model) else 0)
    alignment = economics.teacher_calls_per_example(Store(ctx.params.store), [generator, ctx.revisor.model],
                                                    generated, brainstormed)
    return {**quality.quality_report(rows, records, usage), "alignment": alignment}


# ---- the stages ------------------------------------------------------------------------------
def _llm_inputs(params: SynthParams, endpoint: Endpoint, prompt_names: list[str]) -> dict:
    synth = params.synth
    return {"model": endpoint.fingerprint_fields(),
            "sampling": synth.sampling.resolved().fingerprint_fields(),
            "max_attempts": synth.max_attempts, "seed": synth.seed,
            "prompts": {n: prompts.version(n) for n in prompt_names}}


def persona_chunks(params: SynthParams) -> list[str]:
    """Shard keys of the tasks stage (and of every stage after it until the filter); none when the
    run is grounded only."""
    if params.grounded.corpus and params.grounded.share == 1:
        return []
    n, size = params.synth.personas, params.synth.personas_per_shard
    return [f"{i:05d}" for i in range((n + size - 1) // size)]


def grounded_passages(params: SynthParams) -> list[documents.Passage]:
    """The passages of a grounded run; below share 1, cut so they make up that share of the rows."""
    cfg, synth = params.grounded, params.synth
    limit = None
    if cfg.share < 1:
        brainstormed = synth.personas * synth.tasks_per_persona * synth.examples_per_task
        limit = max(1, round(brainstormed * cfg.share / (1 - cfg.share) / cfg.queries_per_passage))
    return documents.selected_passages(cfg.corpus, cfg.documents, cfg.passage_words, synth.seed, limit)


def grounded_chunks(params: SynthParams) -> list[str]:
    """Shard keys of the grounded stage ('g00000', ...); none without a corpus."""
    if not params.grounded.corpus:
        return []
    n, size = len(grounded_passages(params)), params.grounded.passages_per_shard
    return [f"g{i:05d}" for i in range((n + size - 1) // size)]


def stage_shards(params: SynthParams, stage: str) -> int | None:
    """How many shards a stage of the run has (for progress over the whole stage)."""
    chunks, grounded = len(persona_chunks(params)), len(grounded_chunks(params))
    return {"personas": 1, "tasks": chunks, "examples": chunks, "revised": chunks, "grounded": grounded,
            "corpus": chunks + len(corpus_keys(params)), "verdicts": chunks + grounded}.get(stage) or None


def needs_personas(params: SynthParams) -> bool:
    return bool(persona_chunks(params)) or (bool(params.grounded.corpus) and params.grounded.personas)


def _personas(ctx, key, rows, side, progress):
    synth = ctx.params.synth
    if synth.persona_source:
        return personas.sample_personas(sources.load_personas(synth.persona_source), synth.personas,
                                        synth.seed, synth.persona_source)
    return personas.expand_personas(ctx.client("brainstormer"), synth.personas, synth.seed, progress)


def _tasks(ctx, key, rows, side, progress):
    synth = ctx.params.synth
    start, end = int(key) * synth.personas_per_shard, (int(key) + 1) * synth.personas_per_shard
    types = brainstorm.assign_task_types(len(rows), synth.tasks_per_persona, synth.task_mix, synth.seed)
    topics = sources.load_topics(synth.topic_source) if synth.topic_source else None
    dealt = brainstorm.deal_topics(types[:end], topics, synth.tasks_per_topic, synth.seed)  # the run's prefix
    return brainstorm.brainstorm_tasks(ctx.client("brainstormer"), rows[start:end], types[start:end],
                                       synth.seed, dealt[start:end], synth.tasks_per_topic, progress)


def _examples(ctx, key, rows, side, progress):
    synth = ctx.params.synth
    return generate.generate_examples(ctx.client("generator"), rows, synth.examples_per_task,
                                      synth.seed, synth.max_num_words, synth.languages,
                                      progress)


def _grounded(ctx, key, rows, side, progress):
    cfg, size = ctx.params.grounded, ctx.params.grounded.passages_per_shard
    chunk = grounded_passages(ctx.params)[int(key[1:]) * size:(int(key[1:]) + 1) * size]
    return grounded.generate_queries(ctx.client("generator"), chunk, cfg.queries_per_passage,
                                     ctx.params.synth.seed, cfg.instruction, rows if cfg.personas else (),
                                     progress)


def _revised(ctx, key, rows, side, progress):
    if not ctx.params.synth.revise:
        return revise.skip_revision(rows)
    return revise.revise_examples(ctx.client("revisor"), rows, ctx.params.synth.seed, progress)


PERSONAS = Stage(
    "personas", schemas.PERSONAS, None,
    lambda p: {"count": p.synth.personas, "source": sources.source_version(p.synth.persona_source),
               **_llm_inputs(p, p.brainstormer or p.generator, [personas.PROMPT])},
    _personas, (personas, sources, *LLM_CODE))
TASKS = Stage(
    "tasks", schemas.TASKS, "personas",
    lambda p: {"task_mix": p.synth.task_mix, "per_persona": p.synth.tasks_per_persona,
               "personas_per_shard": p.synth.personas_per_shard, "per_topic": p.synth.tasks_per_topic,
               "topics": sources.source_version(p.synth.topic_source),
               **_llm_inputs(p, p.brainstormer or p.generator, ["persona_system", "topic"] + [
                   TASK_SPECS[t].brainstorm_prompt for t in p.synth.task_mix
                   if TASK_SPECS[t].brainstorm_prompt])},
    _tasks, (brainstorm, sources, *LLM_CODE))
EXAMPLES = Stage(
    "examples", schemas.EXAMPLES, "tasks",
    lambda p: {"per_task": p.synth.examples_per_task, "max_num_words": p.synth.max_num_words,
               "languages": p.synth.languages,
               **_llm_inputs(p, p.generator, [TASK_SPECS[t].generate_prompt for t in p.synth.task_mix])},
    _examples, (generate, *LLM_CODE))
REVISED = Stage(
    "revised", schemas.REVISED, "examples",
    lambda p: {"revise": p.synth.revise,
               **(_llm_inputs(p, p.revisor or p.generator, [revise.PROMPT]) if p.synth.revise else {})},
    _revised, (revise, *LLM_CODE))
GROUNDED = Stage(
    "grounded", schemas.REVISED, "personas",
    lambda p: {**p.grounded.fingerprint_fields(), "corpus": sources.source_version(p.grounded.corpus),
               "passages": len(grounded_passages(p)) if p.grounded.corpus else 0,
               **_llm_inputs(p, p.generator, [grounded.PROMPT])},
    _grounded, (grounded, documents, *LLM_CODE))
CORPUS = Stage(
    "corpus", schemas.CORPUS, "revised",
    lambda p: {"model": p.filter.model, "external": sources.source_version(p.filter.external_corpus),
               "background": sources.source_version(p.filter.background_corpus), "min_corpus": p.filter.min_corpus,
               "documents": sources.source_version(p.grounded.corpus), "passage_words": p.grounded.passage_words},
    verdicts.corpus_shard, (verdicts, consistency, sources, documents))
VERDICTS = Stage(
    "verdicts", schemas.VERDICTS, "revised", lambda p: p.filter.fingerprint_fields(), verdicts.verdict_shard,
    (verdicts, consistency, search, gates, grounded, duplicates))  # its duplicates shard is a side input

SYNTH_STAGES = [PERSONAS, TASKS, EXAMPLES, REVISED, GROUNDED, CORPUS, VERDICTS]
