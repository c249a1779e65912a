"""Flow `synth`: personas → tasks → examples → revised → duplicates → verdicts → published set (→ model);
with a corpus, also (or only) queries grounded in its passages → duplicates → verdicts."""
from __future__ import annotations

import argparse
import time
import uuid

from prefect import flow

from embedfactory import runconfig
from embedfactory.config import Endpoint, SynthParams
from embedfactory.report.summary import format_table
from embedfactory.synth import pipeline, preflight
from tasks.common import load_api_keys, load_store_secret, result_storage, run_cli
from tasks.limits import ensure_limits
from tasks.publishing import publish_run, summarize
from tasks.synthesis import find_duplicates, generate_on_pool, project_cost, run_stage_shard
from tasks.training import train_then_evaluate


@flow(name="synth", log_prints=True)
def synth(params: SynthParams = SynthParams()) -> dict:
    """Synthesize an embedding training set and, unless `params.train` is null, fine-tune on it.

    Re-running with the same parameters resumes the same run and regenerates nothing finished."""
    load_store_secret(params.store_secret)
    load_api_keys(params.generator, params.revisor, params.brainstormer)
    preflight.check(params)  # store, sources, eval sets, models, keys, endpoints: every problem at once, before any call
    ensure_limits(params.generator, params.revisor, params.brainstormer)  # shared by every worker
    run_id = params.run_id or pipeline.default_run_id(params)
    project_cost(params, run_id)  # printed (and warned about when above the budget) before any call
    with pipeline.open_run(params, run_id, uuid.uuid4().hex, serve=not params.fan_out) as ctx:
        shard = run_stage_shard.with_options(result_storage=result_storage(params.store))
        keys, grounded_keys = pipeline.persona_chunks(params), pipeline.grounded_chunks(params)
        personas, chains = (_generate_on_pool if params.fan_out else _generate_here)(
            ctx, shard, keys, grounded_keys, pipeline.needs_personas(params))
        made = chains["revised"] + chains["grounded"]  # the example shards the filter reads
        repeats = find_duplicates.with_options(result_storage=result_storage(params.store)).submit(ctx, made)  # one pass in shard order: linear in the rows
        corpus = [shard.submit("corpus", ctx, k, [r]) for k, r in zip(keys, chains["revised"])]
        corpus += [shard.submit("corpus", ctx, k, []) for k in pipeline.corpus_keys(params)]
        corpus = [f.result() for f in corpus]
        # each verdict shard searches the corpus (its task types' pools) and reads its rows' duplicates
        repeats = repeats.result()
        verdicts = [shard.submit("verdicts", ctx, r.key, [r], side=corpus + [d]) for r, d in zip(made, repeats)]
    records = {"personas": [personas] if personas else [], **chains, "corpus": corpus, "duplicates": repeats,
               "verdicts": [f.result() for f in verdicts]}
    dataset = publish_run(ctx, records)
    training = (train_then_evaluate(params.store, dataset["path"], params.train, ctx.run_token)
                if params.train else None)
    table = summarize(ctx, records, training)
    return {"run_id": run_id, "dataset": dataset, "training": training, "summary": table}


GENERATION = ["tasks", "examples", "revised"]


def _generate_here(ctx, shard, keys, grounded_keys, with_personas):
    """Personas, each persona chunk's tasks → examples → revised, and the grounded shards, here."""
    personas = shard("personas", ctx, "00000", []) if with_personas else None
    futures = {stage: [] for stage in [*GENERATION, "grounded"]}
    for key in keys:  # each shard flows on without waiting for others
        upstream = [personas]
        for stage in GENERATION:
            upstream = [shard.submit(stage, ctx, key, upstream)]
            futures[stage].append(upstream[0])
    grounded_upstream = [personas] if personas and ctx.params.grounded.personas else []
    futures["grounded"] = [shard.submit("grounded", ctx, key, grounded_upstream) for key in grounded_keys]
    return personas, {stage: [f.result() for f in fs] for stage, fs in futures.items()}


def _generate_on_pool(ctx, shard, keys, grounded_keys, with_personas):
    """The same as flow runs of `params.fan_out` on the GPU pool, one per shard."""
    personas = generate_on_pool(ctx, "00000", ["personas"], [])[0] if with_personas else None
    grounded_upstream = [personas] if personas and ctx.params.grounded.personas else []
    runs = ([generate_on_pool.submit(ctx, key, GENERATION, [personas]) for key in keys]
            + [generate_on_pool.submit(ctx, key, ["grounded"], grounded_upstream) for key in grounded_keys])
    chains = [f.result() for f in runs]
    out = {stage: [chain[i] for chain in chains[:len(keys)]] for i, stage in enumerate(GENERATION)}
    return personas, {**out, "grounded": [chain[0] for chain in chains[len(keys):]]}


# command-line flags: the SynthParams field each sets, and its type
FLAGS = {"--store": ("store", str), "--run-id": ("run_id", str), "--personas": ("synth.personas", int),
         "--tasks-per-persona": ("synth.tasks_per_persona", int),
         "--examples-per-task": ("synth.examples_per_task", int), "--base-url": ("generator.base_url", str),
         "--model": ("generator.model", str), "--draft-model": ("generator.draft_model", str),
         "--slots": ("generator.slots", int), "--ctx-per-slot": ("generator.ctx_per_slot", int),
         "--corpus": ("grounded.corpus", str), "--documents": ("grounded.documents", int),
         "--grounded-share": ("grounded.share", float)}


def _params_from_cli(argv: list[str] | None = None) -> SynthParams:
    """SynthParams from `--config run.yaml` (the keys of deployment synth/main's `parameters:`), then
    the flags below, then `--set` overrides; every key and value checked before anything runs."""
    cli = argparse.ArgumentParser(description="Run flow `synth` (see SynthParams for every field).")
    runconfig.add_arguments(cli)
    for flag, (key, kind) in FLAGS.items():  # help: the config field's own description and default
        cli.add_argument(flag, type=kind, help=runconfig.field_help(SynthParams, key))
    cli.add_argument("--task-mix", help="weights per task type, e.g. retrieval=7,classification=7,sts=7; "
                     + runconfig.field_help(SynthParams, "synth.task_mix"))
    for role, name in (("brainstorm", "brainstormer"), ("revisor", "revisor")):
        cli.add_argument(f"--{role}-url", help=f"{runconfig.field_help(SynthParams, name)}: its base URL")
        cli.add_argument(f"--{role}-model", help=f"its model (with --{role}-url; default: the generator's)")
    cli.add_argument("--no-revise", action="store_true", help=runconfig.field_help(SynthParams, "synth.revise"))
    cli.add_argument("--no-train", action="store_true", help="publish without fine-tuning (params.train=null)")
    args = cli.parse_args(argv)
    flags = {key: getattr(args, flag[2:].replace("-", "_")) for flag, (key, _) in FLAGS.items()}
    flags.update({"synth.task_mix": _weights(args.task_mix) if args.task_mix else None,
                  "synth.revise": False if args.no_revise else None})
    flags = {f"params.{key}": value for key, value in flags.items()}
    given = runconfig.read(args.config).get("params") or {}
    model = args.model or (given.get("generator") or {}).get("model") or Endpoint().model
    for role, url, name in (("revisor", args.revisor_url, args.revisor_model),
                            ("brainstormer", args.brainstorm_url, args.brainstorm_model)):
        flags[f"params.{role}"] = {"base_url": url, "model": name or model} if url else None
    if args.no_train:
        args.set = ["params.train=null", *args.set]
    return runconfig.from_cli(synth, args, flags).get("params", SynthParams())


def _weights(text: str) -> dict[str, str]:
    pairs = [item.partition("=") for item in text.split(",")]
    return {name.strip(): weight or "1" for name, _, weight in pairs}


def closing(result: dict, store: str, seconds: float) -> str:
    """What a person reads when the run ends: the stages, where the dataset is and what it holds, the
    model if one was trained, and the commands that come next."""
    data, training = result["dataset"], result["training"]
    types = ", ".join(f"{t} {n}" for t, n in sorted(data["by_task_type"].items(), key=lambda kv: -kv[1]))
    lines = [f"\nrun {result['run_id']} finished in {seconds / 60:.1f} min",
             format_table(result["summary"]), "",
             f"dataset: {data['path']}", f"  {data['rows']} rows: {types}"]
    if training:
        losses = training["losses"]
        lines.append(f"model:   {training['model_path']} (loss {losses[0]} -> {losses[-1]})")
        if training["evaluation"]:
            lines += ["", "base vs fine-tuned:", format_table(training["evaluation"]["rows"])]
    lines += ["", "next:",
              f"  python -m embedfactory show {store} --stage verdicts        # kept rows; --rejected: dropped ones and why",
              f"  python -c \"import datasets; print(datasets.load_dataset('{data['path']}'))\"",
              f"  python -m flows.train --store {store}" + ("   # again, with --set config.epochs=2 ..." if training
                                                             else "   # fine-tune MiniLM on it, then evaluate"),
              f"  python -m embedfactory publish {store} --push-to-hub you/name   # to the Hub (HF_TOKEN)"]
    return "\n".join(lines)


if __name__ == "__main__":
    cli_params = runconfig.parsed(_params_from_cli)  # bad keys, sizes or task types: before anything starts
    started = time.monotonic()
    result = run_cli(lambda: synth(cli_params))  # too few rows, budget, pre-flight: one message, exit 1
    print(closing(result, cli_params.store, time.monotonic() - started))
