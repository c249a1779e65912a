"""Flow `eval`: score a model against a baseline on held-out evaluation sets."""
from __future__ import annotations

import argparse

from prefect import flow

from embedfactory import runconfig
from embedfactory.config import EMBEDDED_EMBEDDER, TrainConfig
from embedfactory.report.summary import format_table
from embedfactory.store import Store
from embedfactory.synth import preflight
from tasks.common import load_store_secret, run_cli
from tasks.evaluation import evaluate_model

DEFAULT_SETS = TrainConfig().eval_sets


@flow(name="eval", log_prints=True)
def evaluate(model: str, store: str = "./data", baseline: str = EMBEDDED_EMBEDDER,
             eval_sets: list[str] = DEFAULT_SETS, store_secret: str | None = None) -> dict:
    """`model` and `baseline`: hub ids, local folders, 'embedded:all-MiniLM-L6-v2', or a model
    folder of the store (a train report's `model_path`). `eval_sets`: shipped set names
    (cranfield, stsb-test) or EvalSet JSON files. Scores land in `<store>/evals/` and a table
    artifact. `store_secret`: a Prefect Secret block with S3 settings (see SynthParams)."""
    load_store_secret(store_secret)
    Store(store).check_writable()
    preflight.raise_if(preflight.eval_problems(store, {"model": model, "baseline": baseline}, eval_sets))
    report = evaluate_model(store, model, baseline, eval_sets)
    print(format_table(report["rows"]))
    return report


def _arguments_from_cli(argv: list[str] | None = None) -> dict:
    cli = argparse.ArgumentParser(description="Run flow `eval`: score a model against a baseline.")
    runconfig.add_arguments(cli)
    cli.add_argument("model", nargs="?", help="hub id, folder, or a model folder of the store (or `model` "
                     "in --config)")
    cli.add_argument("--store", help=runconfig.parameter_help(evaluate, "store", "local folder or s3://bucket/prefix"))
    cli.add_argument("--baseline", help=runconfig.parameter_help(evaluate, "baseline", "the model scored beside it"))
    cli.add_argument("--sets", help=runconfig.parameter_help(evaluate, "eval_sets", "comma-separated evaluation sets"))
    args = cli.parse_args(argv)
    arguments = runconfig.from_cli(evaluate, args, {
        "model": args.model, "store": args.store, "baseline": args.baseline,
        "eval_sets": args.sets.split(",") if args.sets else None})
    if "model" not in arguments:
        raise runconfig.ConfigError("a model to score is required: give it as the argument or `model` in --config")
    return arguments


if __name__ == "__main__":
    arguments = runconfig.parsed(_arguments_from_cli)  # bad keys, sizes or task types: before anything starts
    run_cli(lambda: evaluate(**arguments))
