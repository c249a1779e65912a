"""The stages of flow `align` on the store, each idempotent like the synthesis shards.

Layout: the teacher's seed set is the synthesis run `runs/<run_id>/` (personas, tasks, examples);
the alignment stages add `runs/<run_id>/{candidates,preferences,judged}/` and the models
`models/align/<run_id>/{junior,senior,revisor}/` (merged transformers folders with `align.json`);
`registry/generators.json` maps `<export_name>-<role>` to its folder and the `vllm serve` line.
"""
from __future__ import annotations

import json
import tempfile
import time

from ..config import Sampling, SynthParams
from ..ids import stable_hash
from ..llm import costs, gguf, replylog
from ..llm.client import ChatClient
from ..report.economics import E5_CALLS, E5_EXAMPLES, REGISTRY, SPEED_CALLS, SPEED_EXAMPLES
from ..store import ShardRecord, Store
from ..synth import pipeline, revise
from ..synth.common import ShardOutput
from . import data, judge, models, sampling, trainers
from .config import AlignParams, Finetune


def synth_params(params: AlignParams) -> SynthParams:
    """The teacher's seed set as a synthesis run: the teacher is the generator, no revision; the
    align run's prices and budget."""
    return SynthParams(store=params.store, run_id=params.run_id, generator=params.teacher, train=None,
                       synth=params.seed_set.model_copy(update={"revise": False}), prices=params.prices,
                       budget_usd=params.budget_usd)


def teacher_client(ctx: pipeline.RunContext) -> ChatClient:
    """The teacher for judging and revising: greedy (temperature 0), same endpoint as the seed set."""
    sampling = Sampling(temperature=0.0, max_tokens=ctx.params.synth.sampling.max_tokens)  # the seed set's cap
    return ChatClient(ctx.generator, ctx.generator_url, sampling, ctx.params.synth.max_attempts)


def seed_rows(ctx: pipeline.RunContext, tasks: list[ShardRecord], examples: list[ShardRecord]) -> list[dict]:
    task_rows = ctx.stage_dir("tasks").read([r.key for r in tasks]).to_pylist()
    example_rows = ctx.stage_dir("examples").read([r.key for r in examples]).to_pylist()
    return data.seed_prompts(task_rows, example_rows, ctx.params.synth, ctx.params.synth.max_num_words)


def _stage(ctx, name: str, parts: tuple, produce, paid: bool = True) -> ShardRecord:
    """One align stage as one shard; `paid`: it calls the teacher (the budget applies)."""
    out_dir = ctx.stage_dir(name)
    fp = stable_hash(name, *parts)
    if (done := out_dir.committed("00000", fp)) is not None:
        return done
    budgeted = paid and ctx.params.budget_usd is not None
    spend = costs.run_spend(ctx.params, ctx.run_id, ctx.run_token) if budgeted else None
    if spend is not None:
        spend.check()
    started = time.monotonic()
    with replylog.for_shard(out_dir.store, pipeline.reply_folder(out_dir, "00000")), costs.active(spend):
        return pipeline.commit_output(out_dir, "00000", fp, produce(), ctx.run_token, started)  # replies kept


def model_dir(params: AlignParams, role: str) -> str:
    return Store(params.store).path("models", "align", params.run_id, role)


def load_lm(params: AlignParams, name: str):
    """(model, tokenizer, device) for the base model or a model folder this run put in the store."""
    from ..training.encoder import pick_device

    store, device = Store(params.store), str(pick_device(params.device))
    if name.startswith(f"{store.root}/") and not store.is_local:
        local = tempfile.mkdtemp(prefix="embedfactory-lm-")
        store.download_dir(name, local)
        name = local
    return *models.load_causal_lm(name, device), device


def train_role(params: AlignParams, role: str, base: str, rows: list[dict], cfg: Finetune, upstream: str) -> dict:
    """SFT (junior, revisor) or DPO (senior) of `base` on `rows`; skipped when the folder holds a model
    trained from the same inputs. Returns the report saved beside the model as `align.json`."""
    store, path = Store(params.store), model_dir(params, role)
    fp = stable_hash(role, base, cfg.fingerprint_fields(), params.beta if role == "senior" else None, upstream)
    marker = f"{path}/align.json"
    if store.exists(marker) and (done := store.read_json(marker))["fingerprint"] == fp:
        return done
    model, tokenizer, device = load_lm(params, base)
    with tempfile.TemporaryDirectory() as work:
        if role == "senior":
            model, log = trainers.dpo(model, tokenizer, rows, cfg, params.beta, f"{work}/trainer", device)
        else:
            model, log = trainers.sft(model, tokenizer, rows, cfg, f"{work}/trainer", device)
        models.save_merged(model, tokenizer, f"{work}/model")
        store.upload_dir(f"{work}/model", path)
    report = {"role": role, "fingerprint": fp, "base": base, "rows": len(rows), "path": path,
              "config": cfg.model_dump(mode="json"), **({"beta": params.beta} if role == "senior" else {}), **log}
    store.write_json(marker, report)
    return report


def export_gguf(params: AlignParams, role: str, report: dict) -> dict:
    """The role's merged model as one GGUF file of type `params.gguf` under `models/align/<run_id>/gguf/`
    (outside the transformers folder, which vLLM serves and the next role trains from); skipped when the
    file was made from the same model. Returns its marker: path, type and the model's fingerprint."""
    store = Store(params.store)
    path = store.path("models", "align", params.run_id, "gguf", f"{role}-{params.gguf}.gguf")
    marker = {"path": path, "outtype": params.gguf, "fingerprint": report["fingerprint"]}
    marker_path = f"{path}.json"
    if store.exists(path) and store.exists(marker_path) and store.read_json(marker_path) == marker:
        return marker
    with tempfile.TemporaryDirectory() as work:
        folder = report["path"]
        if not store.is_local:
            store.download_dir(folder, f"{work}/model")
            folder = f"{work}/model"
        out = gguf.convert(folder, f"{work}/{role}.gguf", params.gguf)
        store.write_bytes(path, out.read_bytes())
    store.write_json(marker_path, marker)
    return marker


def split_seed(seed: list[dict], held_out: float) -> tuple[list[dict], list[dict]]:
    """(the junior's SFT prompts, the held-out prompts it samples candidates for), by a stable hash of
    each example id: a share `held_out` of them (at least one each way), the same on every rerun."""
    if len(seed) < 2:
        raise ValueError(f"the teacher's seed set has {len(seed)} valid example(s): the junior needs at least "
                         "one to learn from and one held out to sample on (raise seed_set.personas)")
    ordered = sorted(seed, key=lambda r: stable_hash("held-out", r["example_id"]))
    held = min(max(1, round(len(seed) * held_out)), len(seed) - 1)
    return ordered[held:], ordered[:held]


def sft_rows(seed: list[dict]) -> list[dict]:
    return [data.chat(r["messages"], r["output"]) for r in seed]


def candidates(ctx, params: AlignParams, junior: dict, seed: list[dict]) -> ShardRecord:
    def produce():
        model, tokenizer, _ = load_lm(params, junior["path"])
        rows = sampling.sample_candidates(model, tokenizer, seed, params.candidates, params.max_new_tokens,
                                          params.seed_set.seed)
        return _output([{"example_id": r["example_id"], "task_type": r["task_type"], "task": r["task"],
                         "messages": json.dumps(r["messages"]), "candidates": r["candidates"]} for r in rows])

    return _stage(ctx, "candidates", (junior["fingerprint"], params.candidates, params.max_new_tokens), produce,
                  paid=False)  # the junior samples locally


def _output(rows: list[dict]) -> ShardOutput:
    return ShardOutput(rows=rows, rows_in=len(rows))


def _candidate_rows(ctx, record: ShardRecord) -> list[dict]:
    rows = ctx.stage_dir("candidates").read([record.key]).to_pylist()
    return [{**r, "messages": json.loads(r["messages"])} for r in rows]


def preferences(ctx, record: ShardRecord) -> ShardRecord:
    """The teacher's best and worst of each prompt's candidates."""
    return _stage(ctx, "preferences", (record.sha256, judge.PROMPT, ctx.generator.model),
                  lambda: judge.judge_candidates(teacher_client(ctx), _candidate_rows(ctx, record),
                                                 ctx.params.synth.seed))


def judged(ctx, record: ShardRecord) -> ShardRecord:
    """The teacher judges the junior's first answer to each prompt and writes a revision (SPEED's
    revisor data), with the synthesis revisor's prompt."""
    def produce():
        rows = [{"example_id": r["example_id"], "task_type": r["task_type"], "task": r["task"],
                 "fields": r["candidates"][0]} for r in _candidate_rows(ctx, record)]
        return revise.revise_examples(teacher_client(ctx), rows, ctx.params.synth.seed, gate=False)

    return _stage(ctx, "judged", (record.sha256, revise.PROMPT, ctx.generator.model), produce)


def preference_rows(ctx, record: ShardRecord) -> list[dict]:
    return [{"prompt": json.loads(r["prompt"]), "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]}
            for r in ctx.stage_dir("preferences").read([record.key]).to_pylist()]


def revisor_rows(ctx, record: ShardRecord) -> list[dict]:
    return data.revisor_rows(ctx.stage_dir("judged").read([record.key]).to_pylist())


def register(params: AlignParams, reports: dict[str, dict], ggufs: dict[str, dict] | None = None) -> dict:
    """Add the aligned models to the store's registry, by `<export_name>-<role>`, with the command that
    serves each (and, for a GGUF export, the llama.cpp one)."""
    store = Store(params.store)
    path = store.path(*REGISTRY)
    registry = store.read_json(path) if store.exists(path) else {}
    for role, report in reports.items():
        name = f"{params.export_name}-{role}"
        registry[name] = {"role": role, "path": report["path"], "fingerprint": report["fingerprint"],
                          "run_id": params.run_id,
                          "serve": f"vllm serve {report['path']} --served-model-name {name}"}
        if (exported := (ggufs or {}).get(role)) is not None:
            registry[name] |= {"gguf": exported["path"],
                               "serve_gguf": f"llama-server -m {exported['path']} --alias {name}",
                               "embedded": f"EMBEDFACTORY_GGUF={exported['path']} (generator.model={name})"}
    store.write_json(path, registry)
    return registry


def teacher_report(params: AlignParams, records: dict[str, list[ShardRecord]]) -> list[dict]:
    """Teacher calls and tokens per stage, and calls per planned example against SPEED and E5-mistral
    (a synthesis run with these generators reports the calls per example it actually generated:
    `economics.teacher_calls_per_example`)."""
    price = costs.price_of(params.teacher.model, params.prices)
    rows = [{"stage": stage, "teacher_calls": sum(r.llm_calls for r in recs),
             "tokens": sum(r.prompt_tokens + r.completion_tokens for r in recs), "rows": sum(r.rows for r in recs),
             "cost_usd": round(sum(costs.cost(r.prompt_tokens, r.completion_tokens, price) for r in recs), 4)}
            for stage, recs in records.items()]
    calls = sum(r["teacher_calls"] for r in rows)
    rows.append({"stage": "total", "teacher_calls": calls, "tokens": sum(r["tokens"] for r in rows),
                 "cost_usd": round(sum(r["cost_usd"] for r in rows), 4),
                 "rows": None, "calls_per_planned_example": round(calls / params.planned_examples, 6),
                 "speed_calls_per_example": round(SPEED_CALLS / SPEED_EXAMPLES, 6),
                 "e5_mistral_calls_per_example": E5_CALLS / E5_EXAMPLES})
    return rows

