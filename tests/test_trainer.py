import collections
import math

import pytest
import torch

from embedfactory.config import TrainConfig
from embedfactory.models import embedding_model_path
from embedfactory.training.sampler import batches
from embedfactory.training.trainer import train_contrastive

ROWS = [
    {"anchor": "how do I reset my card PIN", "positive": "Resetting a card PIN at an ATM or in the app.",
     "negative": "Ordering a replacement card.", "instruction": "Find the help article for a banking question"},
    {"anchor": "wing lift at low speed", "positive": "Lift coefficients of wings at low Reynolds numbers.",
     "negative": "Drag of bodies in supersonic flow.", "instruction": "Find aerodynamics papers for a query"},
    {"anchor": "I was charged twice", "positive": "duplicate charge", "negative": "card arrival",
     "instruction": "Classify a banking message by intent"},
    {"anchor": "where is my new card", "positive": "card arrival", "negative": None,
     "instruction": "Classify a banking message by intent"},
]


def test_batches_cover_every_row_once_and_skip_lone_rows():
    plan = batches([{}] * 9, 4, seed=0)  # row indices
    flat = [x for b in plan for x in b]
    assert [len(b) for b in plan] == [4, 4]  # the ninth row alone would have no negative
    assert len(set(flat)) == 8 and set(flat) < set(range(9))  # 8 distinct rows of the 9, none twice
    full = batches([{}] * 12, 4, seed=0)
    assert sorted(x for b in full for x in b) == list(range(12))  # all rows, each once
    assert full != batches([{}] * 12, 4, seed=1)  # and shuffled by the seed
    typed = [{"id": i, "task_type": ["retrieval", "sts", "classification"][i % 3]} for i in range(24)]
    semi = batches(typed, 4, seed=0, homogeneous_ratio=0.5)
    assert sorted(i for b in semi for i in b) == list(range(24))  # the semi-homogeneous plan too


@pytest.mark.slow
def test_semi_homogeneous_groups_are_task_types_by_default_so_the_home_part_fills():
    # generated data: every row its own instruction, a few task types (KaLM groups by dataset/type)
    rows = [{"anchor": f"q{i}", "positive": f"p{i}", "instruction": f"task {i}",
             "task_type": ["retrieval", "sts"][i % 2]} for i in range(64)]
    home_share = lambda plan, key: min(collections.Counter(rows[i][key] for i in b).most_common(1)[0][1]  # noqa: E731
                                       for b in plan if len(b) == 8) / 8
    assert home_share(batches(rows, 8, seed=0, homogeneous_ratio=0.75), "task_type") >= 0.75
    assert home_share(batches(rows, 8, seed=0, homogeneous_ratio=0.75, key="instruction"), "instruction") == 1 / 8
    with pytest.raises(ValueError, match="homogeneous_key"):
        batches([{k: v for k, v in r.items() if k != "task_type"} for r in rows], 8, 0, 0.75)


def test_fine_tuning_changes_weights_lowers_loss_and_saves_a_loadable_model(tmp_path):
    from sentence_transformers import SentenceTransformer

    before = SentenceTransformer(embedding_model_path("embedded:all-MiniLM-L6-v2"))
    cfg = TrainConfig(epochs=6, batch_size=4, learning_rate=1e-4)
    report = train_contrastive(ROWS, cfg, str(tmp_path / "model"))
    losses = report["losses"]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-2:]) < sum(losses[:2])
    after = SentenceTransformer(str(tmp_path / "model"))
    changed = [not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters())]
    assert sum(changed) > len(changed) // 2
    assert after.encode(["hello"]).shape == (1, 384)


@pytest.mark.slow
def test_gist_training_with_semi_homogeneous_batches_runs_and_learns(tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=4, learning_rate=1e-4, temperature=0.05,
                      guide_model="embedded:all-MiniLM-L6-v2", homogeneous_ratio=0.5,
                      homogeneous_key="instruction")
    report = train_contrastive(ROWS, cfg, str(tmp_path / "gist"))
    assert len(report["losses"]) == 4 and all(math.isfinite(x) for x in report["losses"])
    assert report["losses"][-1] < report["losses"][0]


@pytest.mark.slow
def test_epoch_snapshots_are_the_models_of_shorter_runs(tmp_path):
    """`epoch_end` sees the model after each epoch but the last; the snapshot after epoch 1 of a
    3-epoch run is the model a 1-epoch run saves (how bench/quality.py chooses epochs on dev)."""
    from sentence_transformers import SentenceTransformer

    snapshots = {}

    def keep(epoch, model):
        snapshots[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.eval()  # the trainer puts the model back in training mode

    # a constant rate: with a schedule over the run, epoch 1 of 3 epochs and a 1-epoch run step differently
    cfg = TrainConfig(epochs=3, batch_size=2, learning_rate=1e-4, warmup_ratio=0, lr_schedule="constant")
    report = train_contrastive(ROWS, cfg, str(tmp_path / "three"), epoch_end=keep)
    assert sorted(snapshots) == [1, 2] and report["steps"] == 6
    train_contrastive(ROWS, cfg.model_copy(update={"epochs": 1}), str(tmp_path / "one"))
    one = SentenceTransformer(str(tmp_path / "one")).state_dict()
    three = SentenceTransformer(str(tmp_path / "three")).state_dict()
    assert all(torch.allclose(one[k], snapshots[1][k], atol=1e-6) for k in one)
    assert not all(torch.allclose(one[k], snapshots[2][k], atol=1e-6) for k in one)
    assert not all(torch.allclose(three[k], snapshots[2][k], atol=1e-6) for k in three)
