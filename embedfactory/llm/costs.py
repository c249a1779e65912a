"""What a run's LLM calls cost: token prices per model (a few well-known ones shipped, overridable in
`SynthParams.prices`), the cost of the calls made, a projection of the whole run before it starts,
and the budget check that stops a run cleanly (`SynthParams.budget_usd`)."""
from __future__ import annotations

import contextlib
import contextvars
import json
import math
import threading
import time

import pyarrow.fs as pafs

from ..config import Price, SynthParams
from ..outcomes import ExpectedStop
from ..store import ShardRecord, StageDir, Store

# USD per million tokens, the providers' list prices of 2025 (input, output); check your contract and
# override in `prices`. Self-hosted models (vLLM, the embedded server) have no price: they cost 0 here.
KNOWN_PRICES = {
    "gpt-4o": Price(input_per_million=2.50, output_per_million=10.00),
    "gpt-4o-mini": Price(input_per_million=0.15, output_per_million=0.60),
    "gpt-4.1": Price(input_per_million=2.00, output_per_million=8.00),
    "gpt-4.1-mini": Price(input_per_million=0.40, output_per_million=1.60),
    "gpt-4.1-nano": Price(input_per_million=0.10, output_per_million=0.40),
    "o4-mini": Price(input_per_million=1.10, output_per_million=4.40),
    "gpt-4-turbo": Price(input_per_million=10.00, output_per_million=30.00),
}
# tokens per call (prompt, completion) when the store holds no earlier run to measure them from
TYPICAL_TOKENS = {"personas": (260, 120), "tasks": (420, 160), "examples": (520, 380), "revised": (900, 420),
                  "grounded": (480, 40)}
JUDGE_STAGES = ("preferences", "judged")  # flow align's teacher judgments (the seed set's generator is the teacher)
LLM_STAGES = (*TYPICAL_TOKENS, *JUDGE_STAGES)


class BudgetExceeded(ExpectedStop, RuntimeError):
    """The run's LLM cost reached its budget: no new shard starts; committed shards are kept."""


def price_of(model: str | None, prices: dict[str, Price]) -> Price | None:
    """The configured price, else the shipped one (also for 'openai/gpt-4o'-style names), else None."""
    if not model:
        return None
    if model in prices:
        return prices[model]
    return KNOWN_PRICES.get(model) or KNOWN_PRICES.get(model.rsplit("/", 1)[-1])


def cost(prompt_tokens: int, completion_tokens: int, price: Price | None) -> float:
    if price is None:
        return 0.0
    return (prompt_tokens * price.input_per_million + completion_tokens * price.output_per_million) / 1e6


def stage_models(params: SynthParams) -> dict[str, str]:
    """The model each LLM stage calls."""
    generator = params.generator.model
    brainstorm = (params.brainstormer or params.generator).model
    return {"personas": brainstorm, "tasks": brainstorm, "examples": generator, "grounded": generator,
            "revised": (params.revisor or params.generator).model, **dict.fromkeys(JUDGE_STAGES, generator)}


def usage_table(records: dict[str, list[ShardRecord]], models: dict[str, str],
                prices: dict[str, Price]) -> list[dict]:
    """Calls, tokens and cost per stage and model, over every shard of the run."""
    out = []
    for stage, shards in records.items():
        calls = sum(r.llm_calls for r in shards)
        if not calls:
            continue
        model = models[stage]
        prompt, completion = (sum(r.prompt_tokens for r in shards), sum(r.completion_tokens for r in shards))
        usd = cost(prompt, completion, price_of(model, prices))
        cached = sum(r.cached_tokens for r in shards)
        out.append({"stage": stage, "model": model, "calls": calls, "prompt_tokens": prompt,
                    "completion_tokens": completion, "cached_prompt_tokens": cached,
                    "prompt_cache_hit_rate": round(cached / prompt, 3) if prompt else 0.0,
                    "schema_fallbacks": sum(r.schema_fallbacks for r in shards), "cost_usd": round(usd, 6)})
    return out


def planned_calls(params: SynthParams, brainstormed: bool, with_personas: bool, passages: int = 0) -> dict[str, int]:
    """LLM calls per stage if every reply parses at the first try (retries add to it). `brainstormed`:
    the run has the persona -> task -> example stages; `with_personas`: it brainstorms personas;
    `passages`: the grounded passages it writes queries for."""
    synth, grounded = params.synth, params.grounded
    personas = synth.personas if with_personas and not synth.persona_source else 0
    tasks = synth.personas * math.ceil(synth.tasks_per_persona / synth.tasks_per_topic) if brainstormed else 0
    examples = synth.personas * synth.tasks_per_persona * synth.examples_per_task if brainstormed else 0
    return {"personas": math.ceil(personas / 2), "tasks": tasks, "examples": examples,
            "revised": examples if synth.revise else 0,
            "grounded": passages * grounded.queries_per_passage if grounded.corpus else 0}


def measured_tokens(records: list[ShardRecord]) -> tuple[float, float] | None:
    calls = sum(r.llm_calls for r in records)
    if not calls:
        return None
    return sum(r.prompt_tokens for r in records) / calls, sum(r.completion_tokens for r in records) / calls


def projection(params: SynthParams, brainstormed: bool, with_personas: bool,
               history: dict[str, list[ShardRecord]] | None = None, passages: int = 0) -> list[dict]:
    """The run's expected calls, tokens and cost per stage, before it starts; tokens per call measured
    on `history` (earlier shard records of these stages) where there are any, else TYPICAL_TOKENS."""
    history, models = history or {}, stage_models(params)
    rows = []
    for stage, calls in planned_calls(params, brainstormed, with_personas, passages).items():
        if not calls:
            continue
        measured = measured_tokens(history.get(stage, []))
        prompt, completion = measured or TYPICAL_TOKENS[stage]
        price = price_of(models[stage], params.prices)
        rows.append({"stage": stage, "model": models[stage], "calls": calls,
                     "prompt_tokens": round(calls * prompt), "completion_tokens": round(calls * completion),
                     "tokens_from": "earlier runs" if measured else "typical",
                     "cost_usd": round(cost(calls * prompt, calls * completion, price), 4),
                     "priced": price is not None})
    total = sum(r["cost_usd"] for r in rows)
    rows.append({"stage": "total", "model": "", "calls": sum(r["calls"] for r in rows),
                 "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
                 "completion_tokens": sum(r["completion_tokens"] for r in rows), "tokens_from": "",
                 "cost_usd": round(total, 4), "priced": any(r["priced"] for r in rows)})
    return rows


HISTORY_RUNS = 3  # the projection measures tokens per call on the last few runs


def store_history(store: Store, run_id: str) -> dict[str, list[ShardRecord]]:
    """Shard records of the LLM stages of the store's last HISTORY_RUNS finished runs but `run_id`
    (to measure tokens per call)."""
    root = store.path("runs")
    if not store.exists(root):
        return {}
    finished = [info for info in store.fs.get_file_info(pafs.FileSelector(root, recursive=True))
                if info.path.endswith("/summary.json") and f"/{run_id}/" not in info.path]
    recent = sorted(finished, key=lambda i: i.mtime_ns or 0)[-HISTORY_RUNS:]
    out: dict[str, list[ShardRecord]] = {}
    for run in (i.path[len(root) + 1:].split("/", 1)[0] for i in recent):
        for stage in LLM_STAGES:
            out.setdefault(stage, []).extend(StageDir(store, run, stage).records())
    return out


def run_records(store: Store, run_id: str) -> dict[str, list[ShardRecord]]:
    """The committed shard records of one run's LLM stages."""
    return {stage: StageDir(store, run_id, stage).records() for stage in LLM_STAGES}


def over_budget(params: SynthParams, rows: list[dict]) -> str | None:
    """A warning when the projected cost is above the budget (the run then stops when it reaches it)."""
    total = rows[-1]["cost_usd"] if rows else 0.0
    if params.budget_usd is not None and total > params.budget_usd:
        return (f"the run is projected to cost ${total:.4f}, above its budget of ${params.budget_usd:.4f}: it will "
                "stop when its calls reach the budget (raise budget_usd or make the run smaller to finish it)")
    return None


def spent(records: dict[str, list[ShardRecord]], params: SynthParams) -> float:
    """The cost of the calls recorded in `records` (stage -> shard records)."""
    models = stage_models(params)
    return sum(cost(r.prompt_tokens, r.completion_tokens, price_of(models.get(stage), params.prices))
               for stage, recs in records.items() for r in recs)


def store_spent(params: SynthParams, run_id: str) -> float:
    """A run's cost as the store shows it to every process: its committed shards, plus the replies written to
    the reply logs of shards in flight (any worker's: a log is written within seconds of each reply)."""
    store = Store(params.store)
    total = spent(run_records(store, run_id), params)
    models = stage_models(params)
    for stage in LLM_STAGES:
        price = price_of(models.get(stage), params.prices)
        folder = f"{StageDir(store, run_id, stage).dir}/_replies"
        if price is None or not store.exists(folder):
            continue  # self-hosted: free
        for path in store.list(folder, recursive=True):
            for line in store.read_bytes(path).decode().splitlines() if path.endswith(".jsonl") else []:
                entry = json.loads(line)
                total += cost(entry["prompt_tokens"], entry["completion_tokens"], price)
    return total


class Spend:
    """One run's LLM cost as this process sees it: what the store shows (committed shards, and the reply logs
    of the shards in flight, other workers' included), looked at when first asked and again every
    `SEEN_EVERY_S` while a budget is set, plus every reply this process paid for since (charged as it arrives).
    Under fan-out a worker sees the others' spending within about SEEN_EVERY_S plus the 5 s of a reply
    log's batch, so a run stops at most that much spending past its budget."""

    SEEN_EVERY_S = 30.0

    def __init__(self, params: SynthParams, committed: float, run_id: str | None = None):
        self.params, self.total, self.lock = params, committed, threading.Lock()
        self.run_id, self.seen_at = run_id, time.monotonic()
        self.models = stage_models(params)

    def charge(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        with self.lock:
            self.total += cost(prompt_tokens, completion_tokens, price_of(model, self.params.prices))

    def check(self) -> None:
        budget = self.params.budget_usd
        if budget is None:
            return
        if self.run_id is not None and time.monotonic() - self.seen_at >= self.SEEN_EVERY_S:
            self.look()
        if self.total >= budget:
            raise BudgetExceeded(f"run cost ${self.total:.4f} reached its budget of ${budget:.4f}: no new request "
                                 "starts, the replies already paid for are kept (raise budget_usd and run again "
                                 "to resume)")

    def look(self) -> None:
        """Take the store's view where it shows more than this process's count (the others' replies; ours are
        in it too, so the larger of the two counts nothing twice)."""
        with self.lock:
            self.seen_at = time.monotonic()  # one look at a time
        seen = store_spent(self.params, self.run_id)
        with self.lock:
            self.total = max(self.total, seen)


_SPENDS: dict[str, Spend] = {}
_SPENDS_LOCK = threading.Lock()
_current: contextvars.ContextVar[Spend | None] = contextvars.ContextVar("spend", default=None)


def run_spend(params: SynthParams, run_id: str, run_token: str) -> Spend:
    """The process-wide Spend of one flow run (`run_token`) of a run: the store's view read when its first
    shard asks, and again as it goes; a rerun (a new token, perhaps a new budget) starts from the store again."""
    with _SPENDS_LOCK:
        if run_token not in _SPENDS:
            _SPENDS[run_token] = Spend(params, store_spent(params, run_id), run_id)
        return _SPENDS[run_token]


@contextlib.contextmanager
def active(spend: Spend | None):
    """Make `spend` the one the LLM client of this thread charges and checks."""
    token = _current.set(spend)
    try:
        yield spend
    finally:
        _current.reset(token)


def current() -> Spend | None:
    return _current.get()
