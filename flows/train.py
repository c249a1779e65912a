"""Flow `train`: fine-tune an embedding model on a published dataset, then evaluate it."""
from __future__ import annotations

import argparse
import uuid

from prefect import flow

from embedfactory import runconfig
from embedfactory.config import TrainConfig
from embedfactory.publish.dataset import resolve_dataset
from embedfactory.store import Store
from embedfactory.synth import preflight
from tasks.common import load_store_secret, run_cli
from tasks.training import train_then_evaluate


@flow(name="train", log_prints=True)
def train(store: str = "./data", dataset: str = "synth", version: str | None = None,
          config: TrainConfig = TrainConfig(), store_secret: str | None = None) -> dict:
    """Fine-tune `config.base_model` on `<store>/datasets/<dataset>/<version>` (the latest published
    version by default); saves a sentence-transformers model in the store, checkpointing as it goes
    (a re-run resumes), then scores base vs fine-tuned on `config.eval_sets`. `store_secret`: a
    Prefect Secret block with S3 settings (see SynthParams)."""
    load_store_secret(store_secret)
    target = Store(store)
    target.check_writable()
    preflight.raise_if(preflight.training_problems(config, "config."))  # models and sets, before any loads
    report = train_then_evaluate(store, resolve_dataset(target, dataset, version), config, uuid.uuid4().hex)
    print(f"model: {report['model_path']}\nloss: {report['losses'][0]} -> {report['losses'][-1]} "
          f"over {report['steps']} steps")
    return report


def _arguments_from_cli(argv: list[str] | None = None) -> dict:
    cli = argparse.ArgumentParser(description="Run flow `train`: fine-tune on a published dataset, then "
                                  "evaluate (see TrainConfig for every field of `config`).")
    runconfig.add_arguments(cli)
    cli.add_argument("--store", help=runconfig.parameter_help(train, "store", "local folder or s3://bucket/prefix"))
    cli.add_argument("--dataset", help=runconfig.parameter_help(train, "dataset", "published dataset name"))
    cli.add_argument("--version", help=runconfig.parameter_help(train, "version", "dataset version; none: the latest"))
    cli.add_argument("--base-model", help=runconfig.field_help(TrainConfig, "base_model"))
    cli.add_argument("--epochs", type=int, help=runconfig.field_help(TrainConfig, "epochs"))
    args = cli.parse_args(argv)
    return runconfig.from_cli(train, args, {"store": args.store, "dataset": args.dataset, "version": args.version,
                                            "config.base_model": args.base_model, "config.epochs": args.epochs})


if __name__ == "__main__":
    arguments = runconfig.parsed(_arguments_from_cli)  # bad keys, sizes or task types: before anything starts
    run_cli(lambda: train(**arguments))
