"""Training in two processes (DDP, gloo on CPU, launched by torchrun) against one process with the same
global batch: the same losses step by step, the same weights, and only the first process writing."""
import json
import shutil

import pytest
import torch

from embedfactory.config import EMBEDDED_EMBEDDER, TrainConfig
from embedfactory.models import embedding_model_path
from embedfactory.store import Store
from embedfactory.training.launch import train_distributed
from embedfactory.training.trainer import train_contrastive

# the losses of the two runs agree to this relative tolerance (float sums in another order)
TOLERANCE = 1e-4


def no_dropout_student(folder) -> str:
    """MiniLM with dropout off: one process and two then compute the same function, so their losses
    can be compared step by step (with dropout each process draws its own masks)."""
    shutil.copytree(embedding_model_path(EMBEDDED_EMBEDDER), folder)
    config = folder / "config.json"
    fields = json.loads(config.read_text())
    config.write_text(json.dumps({**fields, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    return str(folder)


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_same_global_batch(tmp_path):
    from sentence_transformers import SentenceTransformer

    topics = ["wing lift", "card PIN", "boundary layer", "refund", "shock wave", "transfer limit", "heat flux",
              "lost card", "flutter", "exchange rate", "nozzle flow", "ATM fee", "buckling", "top-up", "drag", "PIN block"]
    rows = [{"anchor": f"what about {t}", "positive": f"A passage on {t} and what determines it.",
             "negative": f"A passage on {topics[(i + 1) % 16]}.", "instruction": "find"} for i, t in enumerate(topics)]
    cfg = TrainConfig(base_model=no_dropout_student(tmp_path / "student"), batch_size=8, epochs=2, learning_rate=1e-4,
                      checkpoint_every=3, device="cpu", max_seq_length=32)
    one = train_contrastive(rows, cfg, str(tmp_path / "one"))
    store = Store(str(tmp_path / "store"))
    seen = []
    two = train_distributed(rows, cfg.model_copy(update={"processes": 2}), str(tmp_path / "two"),
                            {"store": store.root, "path": store.path("models", "m", "checkpoint.tar")},
                            card={"train_datasets": [{"name": "ddp-rows/v1"}], "license": "apache-2.0"},
                            progress=lambda step, steps, loss: seen.append((step, steps, loss)))
    print(f"losses, one process: {one['losses']}; two processes: {two['losses']}")
    assert len(one["losses"]) == len(two["losses"]) == 4  # 16 rows, 8 a step, 2 epochs
    assert two["losses"] == pytest.approx(one["losses"], rel=TOLERANCE)  # steps 2-4 follow the gradients
    assert len(set(one["losses"])) == 4  # the check can fail: the steps' losses differ
    ranks = {p["rank"]: p for p in two["processes"]}
    assert ranks[1]["losses"] == pytest.approx(ranks[0]["losses"], rel=TOLERANCE)  # each computes the global batch
    assert ranks[0]["wrote_model"] and ranks[0]["checkpoint_saves"] == 1  # at step 3 (not after the last)
    assert not ranks[1]["wrote_model"] and ranks[1]["checkpoint_saves"] == 0
    assert store.exists(store.path("models", "m", "checkpoint.tar"))
    # the caller saw each step of the first process as it was logged, and the card names the data
    assert seen == [(step, 4, loss) for step, loss in enumerate(two["losses"], start=1)]
    card = (tmp_path / "two" / "README.md").read_text()
    assert "license: apache-2.0" in card and "ddp-rows/v1" in card
    a, b = SentenceTransformer(str(tmp_path / "one")), SentenceTransformer(str(tmp_path / "two"))
    for x, y in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_a_batch_that_does_not_divide_among_the_processes_is_refused_before_training():
    with pytest.raises(ValueError, match="must divide among processes=3"):
        TrainConfig(batch_size=8, processes=3)
