"""Flow `align` (SPEED): teacher seed set -> junior SFT -> junior candidates -> teacher preferences
-> senior DPO; teacher judgments of the junior -> revisor SFT; export and registry."""
from __future__ import annotations

import argparse
import uuid

from prefect import flow
from prefect.artifacts import create_table_artifact

from embedfactory import runconfig
from embedfactory.align import run
from embedfactory.align.config import AlignParams
from embedfactory.ids import stable_hash
from embedfactory.report.summary import format_table
from embedfactory.store import Store
from embedfactory.synth import pipeline, preflight
from tasks.alignment import export_gguf, judge_junior, judge_preferences, sample_candidates, train_role
from tasks.common import load_api_keys, result_storage, run_cli
from tasks.limits import ensure_limits
from tasks.synthesis import project_cost, run_stage_shard


@flow(name="align", log_prints=True)
def align(params: AlignParams = AlignParams()) -> dict:
    """Make junior, senior and revisor generators from `params.base_model` with a few teacher calls;
    they land in `<store>/models/align/<run_id>/` and the registry. Re-running redoes nothing finished."""
    store = Store(params.store)
    load_api_keys(params.teacher)
    preflight.raise_if(preflight.align_problems(params))  # store, base model, sources, teacher: before any call
    ensure_limits(params.teacher)  # the teacher's shared limits, if it has any
    seed_params = run.synth_params(params)
    project_cost(seed_params, params.run_id, "align-projection")  # the seed set's calls and cost (the judgments add one per prompt each)
    with pipeline.open_run(seed_params, params.run_id, uuid.uuid4().hex) as ctx:
        shard = run_stage_shard.with_options(result_storage=result_storage(params.store))
        personas = shard("personas", ctx, "00000", [])
        keys = pipeline.persona_chunks(seed_params)
        tasks = [shard("tasks", ctx, key, [personas]) for key in keys]
        examples = [shard("examples", ctx, key, [t]) for key, t in zip(keys, tasks)]
        seed = run.seed_rows(ctx, tasks, examples)
        if not seed:
            raise RuntimeError("the teacher's seed set has no valid example: check the teacher endpoint")
        learned, held = run.split_seed(seed, params.held_out)  # candidates on prompts the junior never saw
        junior = train_role(params, "junior", params.base_model, run.sft_rows(learned), params.junior,
                            upstream=stable_hash(*(e.sha256 for e in examples), params.held_out))
        candidates = sample_candidates(ctx, params, junior, held)
        preferences, judged = judge_preferences(ctx, candidates), judge_junior(ctx, candidates)
        pairs, revisions = run.preference_rows(ctx, preferences), run.revisor_rows(ctx, judged)
        if not pairs:
            raise RuntimeError("the teacher judged no candidate set validly: no preference pairs for DPO")
        if not revisions:
            raise RuntimeError(f"the teacher revised none of the junior's {judged.rows_in} answers validly: "
                               "no revisor data (see the reject reasons of stage 'judged')")
        senior = train_role(params, "senior", junior["path"], pairs, params.senior, upstream=preferences.sha256)
        revisor = train_role(params, "revisor", params.base_model, revisions, params.revisor,
                             upstream=judged.sha256)
    models = {"junior": junior, "senior": senior, "revisor": revisor}
    ggufs = {role: export_gguf(params, role, report) for role, report in models.items()} if params.gguf else {}
    registry = run.register(params, models, ggufs)
    calls = run.teacher_report(params, {"personas": [personas], "tasks": tasks, "examples": examples,
                                        "preferences": [preferences], "judged": [judged]})
    store.write_json(store.path("runs", params.run_id, "align_report.json"),
                     {"teacher_calls": calls, "models": models})
    create_table_artifact(calls, key="align-teacher-calls", description=f"Teacher calls of {params.run_id}")
    print(format_table(calls, ["stage", "teacher_calls", "tokens", "rows", "cost_usd"]))
    return {"models": models, "registry": registry, "teacher_calls": calls}


def _params_from_cli(argv: list[str] | None = None) -> AlignParams:
    cli = argparse.ArgumentParser(description="Run flow `align` (see AlignParams for every field).")
    runconfig.add_arguments(cli)
    for flag, key in (("--store", "store"), ("--base-model", "base_model"), ("--teacher-url", "teacher.base_url"),
                      ("--teacher-model", "teacher.model"), ("--gguf", "gguf")):  # help: the field's own
        cli.add_argument(flag, help=runconfig.field_help(AlignParams, key))
    cli.add_argument("--steps", type=int, help="each of the three models (junior, senior, revisor): "
                     + runconfig.field_help(AlignParams, "junior.steps"))
    args = cli.parse_args(argv)
    flags = {"store": args.store, "base_model": args.base_model, "teacher.base_url": args.teacher_url,
             "teacher.model": args.teacher_model, "gguf": args.gguf,
             **{f"{role}.steps": args.steps for role in ("junior", "senior", "revisor")}}
    return runconfig.from_cli(align, args, {f"params.{k}": v for k, v in flags.items()}).get("params", AlignParams())


if __name__ == "__main__":
    cli_params = runconfig.parsed(_params_from_cli)  # bad keys, sizes or task types: before anything starts
    run_cli(lambda: align(cli_params))
