"""Flow `eval`: score a model against a baseline on held-out evaluation sets."""
from __future__ import annotations

import argparse

from prefect import flow

from embedfactory.config import EMBEDDED_EMBEDDER, TrainConfig
from embedfactory.evaluation import resolve_eval_sets
from embedfactory.report import format_table
from embedfactory.store import Store
from tasks.common import load_store_secret
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
    resolve_eval_sets(eval_sets)
    report = evaluate_model(store, model, baseline, eval_sets)
    print(format_table(report["rows"]))
    return report


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="Run flow `eval`.")
    cli.add_argument("model")
    cli.add_argument("--store", default="./data")
    cli.add_argument("--baseline", default=EMBEDDED_EMBEDDER)
    cli.add_argument("--sets", default=",".join(DEFAULT_SETS))
    args = cli.parse_args()
    evaluate(args.model, args.store, args.baseline, args.sets.split(","))
