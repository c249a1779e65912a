"""Flow `train`: fine-tune an embedding model on a published dataset of the store."""
from __future__ import annotations

import uuid

from prefect import flow

from embedfactory.config import TrainConfig
from embedfactory.store import Store
from tasks.training import train_model


@flow(name="train", log_prints=True)
def train(store: str = "./data", dataset: str = "datasets/synth/latest",
          config: TrainConfig = TrainConfig()) -> dict:
    """Train `config.base_model` on `<store>/<dataset>`; saves a sentence-transformers model in the
    store and returns the report (model path, loss curve)."""
    Store(store).check_writable()
    report = train_model(store, Store(store).path(dataset), config, uuid.uuid4().hex)
    print(f"model: {report['model_path']}\nloss: {report['losses'][0]} -> {report['losses'][-1]} "
          f"over {report['steps']} steps")
    return report
