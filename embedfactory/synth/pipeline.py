"""The run engine: the stage registry, fingerprints, idempotent shard runs, sharding. No Prefect here.

Every stage has one shape (`Stage`): name, version, upstream, the columns it reads, its output
schema, its config slice and its produce function. A shard's fingerprint hashes the stage's name and
version, its config slice (prompt versions, model ids, sampling, seed, sizes, sources by content)
and the checksums of the shards it reads. Run-time knobs (concurrency, timeouts, endpoint URLs,
devices) are left out. A shard already committed with the same fingerprint is returned as is, so
re-running a flow redoes only what is missing or changed.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa
from pydantic import BaseModel

from .. import prompts, schemas
from ..config import Endpoint, Strict, SynthParams
from ..ids import stable_hash
from ..llm import costs, replylog
from ..llm.client import ChatClient
from ..report import economics, quality
from ..store import ShardRecord, StageDir, Store
from ..task_types import TASK_SPECS
from . import brainstorm, documents, duplicates, generate, grounded, personas, revise, sources, verdicts
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
class Source:
    """A file (or a shipped list's name) a stage reads: the stage gets its path, the fingerprint its
    content's checksum (sources.source_version), so a moved file keeps its shards and an edited one
    makes them again."""

    path: str | None


@dataclass(frozen=True)
class ShardJob:
    """What a stage's `produce` gets: the shard (`key`, its upstream `rows`, the `side` shards it
    consults), the stage's own config slice `cfg` (what enters its fingerprint, as `fingerprint_view`
    reads it), `runtime` knobs that cannot change its rows, and the run's means: a role's LLM client
    and the store. Not the run's parameters."""

    key: str
    rows: list[dict]
    side: list[ShardRecord]
    cfg: dict
    runtime: dict
    client: Callable[[str], ChatClient]
    store: Store
    run_id: str
    progress: Progress | None = None

    def stage_dir(self, stage: str) -> StageDir:
        return StageDir(self.store, self.run_id, stage)


EVERY_COLUMN = ("*",)  # `reads` of a stage that carries its upstream's rows on whole


@dataclass(frozen=True)
class Stage:
    """One stage of a synth run, declared whole. A shard's fingerprint is the stage's `name` and
    `version`, the shard key, the stage's config slice (`config(params)`, read by `fingerprint_view`)
    and the checksums of the shards it reads: nothing else. Bump `version` when a code change can
    change the rows (tests/test_stage_versions.py pins each stage's code to its version).

    `reads`: the upstream columns `produce` uses (EVERY_COLUMN: it carries the whole upstream row on,
    so its `schema` must hold every upstream column); `check_stages` holds them against the upstream's
    schema when the registry is built. `runtime(params)`: knobs the stage gets that cannot change its
    rows (devices, batch sizes)."""

    name: str
    version: int
    upstream: str | None
    reads: tuple[str, ...]
    schema: pa.Schema
    config: Callable[[SynthParams], dict]
    produce: Callable[[ShardJob], ShardOutput]
    runtime: Callable[[SynthParams], dict] = lambda params: {}


def check_stages(stages: list[Stage]) -> list[Stage]:
    """The registry, checked: unique names, each stage writing its schemas.STAGE_SCHEMAS schema, known
    upstreams, and each stage's reads in its upstream's schema (a stage that carries rows on keeps
    every upstream column)."""
    by_name = {s.name: s for s in stages}
    if len(by_name) != len(stages):
        raise ValueError(f"stage names repeat: {[s.name for s in stages]}")
    for stage in stages:
        if stage.schema != schemas.STAGE_SCHEMAS.get(stage.name):
            raise ValueError(f"stage {stage.name!r} writes another schema than schemas.STAGE_SCHEMAS gives it")
    for stage in stages:
        if stage.upstream is None:
            if stage.reads:
                raise ValueError(f"stage {stage.name!r} reads {stage.reads} but has no upstream")
            continue
        if stage.upstream not in by_name:
            raise ValueError(f"stage {stage.name!r}: unknown upstream {stage.upstream!r}")
        has = set(by_name[stage.upstream].schema.names)
        if stage.reads == EVERY_COLUMN:
            missing, where = has - set(stage.schema.names), f"its own schema (it carries {stage.upstream!r} rows on)"
        else:
            missing, where = set(stage.reads) - has, f"the schema of {stage.upstream!r}"
        if missing:
            raise ValueError(f"stage {stage.name!r} reads {sorted(missing)}, which are not in {where}")
    return stages


def fingerprint_view(value):
    """A config slice as it enters a fingerprint: config objects by their fingerprint fields (runtime
    knobs left out), sources by their content, the rest as it is."""
    if isinstance(value, Source):
        return sources.source_version(value.path)
    if isinstance(value, Strict):
        return value.fingerprint_fields()
    if isinstance(value, dict):
        return {k: fingerprint_view(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [fingerprint_view(v) for v in value]
    return value


def fingerprint(stage: Stage, ctx: RunContext, key: str, upstream: list[ShardRecord],
                side: list[ShardRecord] = ()) -> str:
    return stable_hash(stage.name, stage.version, key, fingerprint_view(stage.config(ctx.params)),
                       sorted(u.sha256 for u in upstream), sorted(s.sha256 for s in side))


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
    job = ShardJob(key=key, rows=rows, side=list(side), cfg=stage.config(ctx.params),
                   runtime=stage.runtime(ctx.params), client=ctx.client, store=out_dir.store, run_id=ctx.run_id,
                   progress=progress)
    started = time.monotonic()
    with replylog.for_shard(out_dir.store, reply_folder(out_dir, key)), costs.active(spend):
        return commit_output(out_dir, key, fp, stage.produce(job), ctx.run_token, started, stage.schema)


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
    return duplicates.find(Store(ctx.params.store), duplicates.config(ctx.params), ctx.run_id, ctx.run_token, made,
                           progress)


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
def _llm(params: SynthParams, endpoint: Endpoint, prompt_names: list[str]) -> dict:
    """The slice every LLM stage has: its model, sampling, attempts, seed and prompt versions (the
    client itself comes from the run: `ShardJob.client`)."""
    synth = params.synth
    return {"model": endpoint, "sampling": synth.sampling.resolved(), "max_attempts": synth.max_attempts,
            "seed": synth.seed, "prompts": {n: prompts.version(n) for n in prompt_names}}


def persona_chunks(params: SynthParams) -> list[str]:
    """Shard keys of the tasks stage (and of every stage after it until the filter); none when the
    run is grounded only."""
    if params.grounded.corpus and params.grounded.share == 1:
        return []
    n, size = params.synth.personas, params.synth.personas_per_shard
    return [f"{i:05d}" for i in range((n + size - 1) // size)]


def passage_limit(params: SynthParams) -> int | None:
    """How many passages a grounded run writes queries for: all (None) at share 1, else as many as
    make up that share of the rows."""
    cfg, synth = params.grounded, params.synth
    if cfg.share == 1:
        return None
    brainstormed = synth.personas * synth.tasks_per_persona * synth.examples_per_task
    return max(1, round(brainstormed * cfg.share / (1 - cfg.share) / cfg.queries_per_passage))


def grounded_passages(params: SynthParams) -> list[documents.Passage]:
    """The passages of a grounded run; below share 1, cut so they make up that share of the rows."""
    cfg = params.grounded
    return documents.selected_passages(cfg.corpus, cfg.documents, cfg.passage_words, params.synth.seed,
                                       passage_limit(params))


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


def _personas(job: ShardJob) -> ShardOutput:
    cfg, source = job.cfg, job.cfg["source"].path
    if source:
        return personas.sample_personas(sources.load_personas(source), cfg["count"], cfg["seed"], source)
    return personas.expand_personas(job.client("brainstormer"), cfg["count"], cfg["seed"], job.progress)


def _tasks(job: ShardJob) -> ShardOutput:
    cfg, size = job.cfg, job.cfg["personas_per_shard"]
    start, end = int(job.key) * size, (int(job.key) + 1) * size
    types = brainstorm.assign_task_types(len(job.rows), cfg["per_persona"], cfg["task_mix"], cfg["seed"])
    topics = sources.load_topics(cfg["topics"].path) if cfg["topics"].path else None
    dealt = brainstorm.deal_topics(types[:end], topics, cfg["per_topic"], cfg["seed"])  # the run's prefix
    return brainstorm.brainstorm_tasks(job.client("brainstormer"), job.rows[start:end], types[start:end],
                                       cfg["seed"], dealt[start:end], cfg["per_topic"], job.progress)


def _examples(job: ShardJob) -> ShardOutput:
    cfg = job.cfg
    return generate.generate_examples(job.client("generator"), job.rows, cfg["per_task"], cfg["seed"],
                                      cfg["max_num_words"], cfg["languages"], job.progress)


def _grounded(job: ShardJob) -> ShardOutput:
    cfg, size, i = job.cfg, job.cfg["passages_per_shard"], int(job.key[1:])
    chunk = documents.selected_passages(cfg["corpus"].path, cfg["documents"], cfg["passage_words"], cfg["seed"],
                                        cfg["limit"])[i * size:(i + 1) * size]
    return grounded.generate_queries(job.client("generator"), chunk, cfg["queries_per_passage"], cfg["seed"],
                                     cfg["instruction"], job.rows if cfg["personas"] else (), job.progress)


def _revised(job: ShardJob) -> ShardOutput:
    if not job.cfg["revise"]:
        return revise.skip_revision(job.rows)
    return revise.revise_examples(job.client("revisor"), job.rows, job.cfg["seed"], job.progress)


PERSONAS = Stage(
    "personas", 1, None, (), schemas.PERSONAS,
    lambda p: {"count": p.synth.personas, "source": Source(p.synth.persona_source),
               **_llm(p, p.brainstormer or p.generator, [personas.PROMPT])},
    _personas)
TASKS = Stage(
    "tasks", 1, "personas", ("persona_id", "persona"), schemas.TASKS,
    lambda p: {"task_mix": p.synth.task_mix, "per_persona": p.synth.tasks_per_persona,
               "personas_per_shard": p.synth.personas_per_shard, "per_topic": p.synth.tasks_per_topic,
               "topics": Source(p.synth.topic_source),
               **_llm(p, p.brainstormer or p.generator, ["persona_system", "topic"] + [
                   TASK_SPECS[t].brainstorm_prompt for t in p.synth.task_mix
                   if TASK_SPECS[t].brainstorm_prompt])},
    _tasks)
EXAMPLES = Stage(
    "examples", 1, "tasks", ("task_id", "persona_id", "task_type", "task", "topic"), schemas.EXAMPLES,
    lambda p: {"per_task": p.synth.examples_per_task, "max_num_words": p.synth.max_num_words,
               "languages": p.synth.languages,
               **_llm(p, p.generator, [TASK_SPECS[t].generate_prompt for t in p.synth.task_mix])},
    _examples)
REVISED = Stage(
    "revised", 1, "examples", EVERY_COLUMN, schemas.REVISED,
    lambda p: {"revise": p.synth.revise,
               **(_llm(p, p.revisor or p.generator, [revise.PROMPT]) if p.synth.revise else {})},
    _revised)
GROUNDED = Stage(  # its shards feed the verdicts stage beside the revised ones: the same schema
    "grounded", 1, "personas", ("persona_id", "persona"), schemas.REVISED,
    lambda p: {**p.grounded.fingerprint_fields(), "corpus": Source(p.grounded.corpus), "limit": passage_limit(p),
               "passages": len(grounded_passages(p)) if p.grounded.corpus else 0,  # a folder's content counted
               **_llm(p, p.generator, [grounded.PROMPT])},
    _grounded)
CORPUS = Stage(
    "corpus", 1, "revised", ("task_type", "positive", "negative"), schemas.CORPUS,
    lambda p: {"model": p.filter.model, "external": Source(p.filter.external_corpus),
               "background": Source(p.filter.background_corpus), "min_corpus": p.filter.min_corpus,
               "documents": Source(p.grounded.corpus), "passage_words": p.grounded.passage_words},
    verdicts.corpus_shard,
    runtime=lambda p: {"device": p.filter.device, "batch_size": p.filter.batch_size})
VERDICTS = Stage(  # its side inputs: the corpus shards and its duplicates shard
    "verdicts", 1, "revised", EVERY_COLUMN, schemas.VERDICTS, lambda p: {"filter": p.filter},
    verdicts.verdict_shard)

SYNTH_STAGES = check_stages([PERSONAS, TASKS, EXAMPLES, REVISED, GROUNDED, CORPUS, VERDICTS])
