"""Trainer options on the real all-MiniLM-L6-v2: gradient caching, pooling, Matryoshka, LoRA, resume."""
import pytest
import torch
import torch.nn.functional as F

from embedfactory.config import TrainConfig
from embedfactory.store import Store
from embedfactory.training.data import RowCollator, RowTable
from embedfactory.training.encoder import load_student, pick_device
from embedfactory.training.checkpoints import StoreCheckpoints
from embedfactory.training.loss import InfoNCELoss, in_batch_infonce
from embedfactory.training.trainer import make_loss, train_contrastive, training_arguments
from test_trainer import ROWS

COLUMNS = [["how do I reset my PIN", "wing lift at low speed", "charged twice", "card not here yet"],
           ["Resetting a card PIN at an ATM.", "Lift of wings at low Reynolds numbers and what limits it.",
            "duplicate charge", "card arrival"],
           ["Ordering a replacement card.", "Drag of bodies in supersonic flow."]]
TABLE = RowTable(anchors=COLUMNS[0], positives=COLUMNS[1], negatives=[[COLUMNS[2][0]], [COLUMNS[2][1]], [], []])


def batch(model, table: RowTable = TABLE) -> tuple[list[dict], torch.Tensor]:
    """The features and labels the Trainer hands the loss for every row of `table`."""
    from sentence_transformers.base.trainer import BaseTrainer

    inputs = RowCollator(model.preprocess)([{"anchor": a, "positive": p, "negatives": n, "label": i} for i, (a, p, n)
                                            in enumerate(zip(table.anchors, table.positives, table.negatives))])
    return BaseTrainer.collect_features(None, inputs)


def _grads(cached: bool, dropout_seed: int = 7, mini_batch: int = 4, dropout: bool = True):
    model = load_student(TrainConfig(), pick_device("cpu"))
    model.train(dropout)  # dropout on: the cached replay must reproduce its masks
    features, labels = batch(model)
    torch.manual_seed(dropout_seed)
    loss = InfoNCELoss(model, TABLE, 0.05, cached=cached, mini_batch_size=mini_batch)(features, labels)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_gradient_caching_gives_the_gradients_of_the_uncached_step():
    loss_plain, plain = _grads(cached=False)
    loss_cached, cached = _grads(cached=True)  # one mini-batch per column: the same dropout draws
    assert loss_cached == pytest.approx(loss_plain, rel=1e-5)
    assert len(plain) == len(cached) > 50
    for a, b in zip(plain, cached):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    _, other_dropout = _grads(cached=True, dropout_seed=8)  # the check can fail: masks matter
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(cached, other_dropout))
    # mini-batches of 2 texts: the same gradients (dropout off: smaller mini-batches draw other masks)
    _, whole = _grads(cached=False, dropout=False)
    _, split = _grads(cached=True, mini_batch=2, dropout=False)
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_loss_sees_each_rows_negatives_and_masks_equal_texts():
    model = load_student(TrainConfig(), pick_device("cpu")).eval()
    features, labels = batch(model)
    assert len(features) == 3 and features[2]["input_ids"].shape[0] == 2  # the batch's two negatives, flattened
    with torch.no_grad():
        q, p, n = (model(f)["sentence_embedding"] for f in features)
        got = InfoNCELoss(model, TABLE, 0.05)(features, labels)
    assert got.item() == pytest.approx(in_batch_infonce(q, torch.cat([p, n]), COLUMNS[1] + COLUMNS[2]).item(), rel=1e-5)
    twin = RowTable(TABLE.anchors, [*TABLE.positives[:3], TABLE.positives[2]], TABLE.negatives)  # rows 2, 3 share a positive
    with torch.no_grad():
        q, p, n = (model(f)["sentence_embedding"] for f in batch(model, twin)[0])
        masked = InfoNCELoss(model, twin, 0.05)(*batch(model, twin))
    assert masked.item() == pytest.approx(in_batch_infonce(q, torch.cat([p, n]), twin.doc_texts([0, 1, 2, 3])).item(),
                                          rel=1e-5)


@pytest.mark.parametrize("pooling, mode", [("cls", "cls"), ("last", "lasttoken"), ("mean", "mean")])
def test_pooling_is_replaced_as_asked(pooling, mode):
    model = load_student(TrainConfig(pooling=pooling), pick_device("cpu"))
    assert model[1].pooling_mode == mode


def test_matryoshka_loss_is_the_weighted_mean_over_the_full_and_truncated_widths():
    model = load_student(TrainConfig(), pick_device("cpu")).eval()
    features, labels = batch(model)
    with torch.no_grad():
        q, p, n = (model(f)["sentence_embedding"] for f in features)
    texts = COLUMNS[1] + COLUMNS[2]
    parts = [in_batch_infonce(q[:, :w], torch.cat([p, n])[:, :w], texts).item() for w in (384, 2, 4)]
    for cached in (False, True):
        for weights, want in ((None, sum(parts) / 3), ([2, 1, 1], (2 * parts[0] + parts[1] + parts[2]) / 4)):
            cfg = TrainConfig(matryoshka_dims=[2, 4], matryoshka_weights=weights, grad_cache=cached)
            with torch.no_grad():
                got = make_loss(cfg, model, TABLE, pick_device("cpu"))(features, labels)
            assert got.item() == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="one per matryoshka_dims width"):
        TrainConfig(matryoshka_dims=[2, 4], matryoshka_weights=[1, 1])


def test_matryoshka_widths_beyond_the_model_fail_before_training():
    with pytest.raises(ValueError, match="exceed the model's 384"):
        load_student(TrainConfig(matryoshka_dims=[512]), pick_device("cpu"))


@pytest.mark.slow
def test_lora_trains_adapters_only_and_saves_a_plain_merged_model(tmp_path):
    from sentence_transformers import SentenceTransformer

    cfg = TrainConfig(epochs=2, batch_size=4, learning_rate=1e-3, lora={"rank": 4, "alpha": 8},
                      matryoshka_dims=[64])
    model = load_student(cfg, pick_device("cpu"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    report = train_contrastive(ROWS, cfg, str(tmp_path / "lora"))
    assert report["steps"] == 2
    saved = SentenceTransformer(str(tmp_path / "lora"))
    assert not any("lora" in n for n, _ in saved.named_parameters())
    base = load_student(TrainConfig(), pick_device("cpu"))
    changed = [not torch.equal(a, b) for a, b in zip(base.parameters(), saved.parameters())]
    assert 0 < sum(changed) < len(changed)  # the adapted linear layers moved, embeddings did not


class CountingCheckpoints(StoreCheckpoints):
    saves = 0

    def save(self, folder):
        super().save(folder)
        self.saves += 1


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_and_ends_with_the_same_weights(tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    seen = []  # the anchors of each step's batch, as the loss receives them
    real = InfoNCELoss.batch_loss

    def recording(self, q, p, n, rows, owners):
        seen.append([self.table.anchors[r] for r in rows])
        return real(self, q, p, n, rows, owners)

    monkeypatch.setattr(InfoNCELoss, "batch_loss", recording)

    # warmup, decay and clipping: the resumed run must also restore the schedule's position
    cfg = TrainConfig(epochs=5, batch_size=2, learning_rate=1e-4, checkpoint_every=2,
                      warmup_ratio=0.3, lr_schedule="linear", max_grad_norm=1.0)
    straight = train_contrastive(ROWS, cfg, str(tmp_path / "straight"))
    straight_batches, seen[:] = list(seen), []

    def crash_at_step_7(step, total, loss):
        if step == 7:
            raise KeyboardInterrupt("killed")

    store = Store(str(tmp_path / "store"))
    checkpoints = CountingCheckpoints(store, store.path("models", "m", "checkpoint.tar"))
    with pytest.raises(KeyboardInterrupt):
        train_contrastive(ROWS, cfg, str(tmp_path / "resumed"), crash_at_step_7, checkpoints)
    assert checkpoints.saves == 3
    restored = checkpoints.load(str(tmp_path / "look"))
    assert restored.endswith("checkpoint-6")
    names = {f.name for f in (tmp_path / "look" / "checkpoint-6").iterdir()}
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= names  # every random state
    seen[:] = []
    steps_run = []
    resumed = train_contrastive(ROWS, cfg, str(tmp_path / "resumed"),
                                lambda step, total, loss: steps_run.append(step), checkpoints)
    assert steps_run == [7, 8, 9, 10]
    assert seen == straight_batches[6:]  # the same batches, in the same order
    assert resumed["losses"] == straight["losses"]
    a, b = SentenceTransformer(str(tmp_path / "straight")), SentenceTransformer(str(tmp_path / "resumed"))
    for x, y in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(x, y)


def test_schedule_clipping_and_precision_are_the_trainers_own_arguments(tmp_path):
    cfg = TrainConfig(warmup_ratio=0.2, lr_schedule="constant", max_grad_norm=None, batch_size=8, precision="bf16")
    args = training_arguments(cfg, pick_device("cpu"), str(tmp_path), steps=10)
    assert (args.warmup_steps, args.lr_scheduler_type, args.max_grad_norm, args.bf16) == (
        2, "constant_with_warmup", 0.0, True)
    assert args.per_device_train_batch_size == 8 and args.get_warmup_steps(10) == 2
    # whole steps only: the Trainer's warm-up starts at a rate of 0, so a 4-step run gets none
    assert training_arguments(cfg, pick_device("cpu"), str(tmp_path), steps=4).get_warmup_steps(4) == 0
    default = TrainConfig()  # sentence-transformers' defaults: 10% warm-up, linear decay, clipping at 1.0
    assert (default.warmup_ratio, default.lr_schedule, default.max_grad_norm) == (0.1, "linear", 1.0)
    args = training_arguments(default, pick_device("cpu"), str(tmp_path), steps=10)
    assert (args.lr_scheduler_type, args.max_grad_norm, args.bf16) == ("linear", 1.0, False)


def test_gradient_checkpointing_is_the_trainers_and_changes_no_loss(tmp_path, monkeypatch):
    import transformers.modeling_utils as modeling

    plain = train_contrastive(ROWS, TrainConfig(batch_size=2), str(tmp_path / "plain"))
    recomputed, checkpoint = [], modeling.checkpoint

    def counted(*args, **kwargs):
        recomputed.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(modeling, "checkpoint", counted)
    cfg = TrainConfig(batch_size=2, gradient_checkpointing=True)
    assert training_arguments(cfg, pick_device("cpu"), str(tmp_path), steps=2).activation_checkpointing
    ckpt = train_contrastive(ROWS, cfg, str(tmp_path / "ckpt"))
    assert len(recomputed) >= 6 * len(ckpt["losses"])  # MiniLM's 6 layers, at least once each a step
    assert ckpt["losses"] == pytest.approx(plain["losses"], rel=1e-5)  # dropout masks replayed: the same run


@pytest.mark.slow
def test_learning_rate_warms_up_then_decays_to_zero_in_a_real_run(tmp_path):
    report = train_contrastive(ROWS * 5, TrainConfig(batch_size=2, warmup_ratio=0.2, learning_rate=1e-4),
                               str(tmp_path / "m"))
    rates = report["learning_rates"]  # the rate each of the 10 steps used
    assert rates[:3] == pytest.approx([0, 5e-5, 1e-4])  # warm-up over 2 steps, from 0 (the Trainer's own)
    assert all(a > b for a, b in zip(rates[2:], rates[3:]))  # then a linear fall that reaches 0 after the last
    assert rates[-1] == pytest.approx(1e-4 / 8) and len(rates) == 10


@pytest.mark.parametrize("max_norm", [None, 0.05])
def test_gradients_are_clipped_to_the_norm_before_each_step(tmp_path, max_norm):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    handle = register_optimizer_step_pre_hook(record)
    try:
        train_contrastive(ROWS, TrainConfig(batch_size=2, max_grad_norm=max_norm), str(tmp_path / "m"))
    finally:
        handle.remove()
    assert len(norms) >= 2
    if max_norm is None:
        assert max(norms) > 0.05  # the unclipped norm is above the bound, so the clipped case can fail
    else:
        assert max(norms) <= max_norm * 1.001


def test_temperature_defaults_follow_the_loss_and_reach_the_card():
    """GISTEmbed (and sentence-transformers' GISTEmbedLoss) train at 0.01; InfoNCE keeps MNRL's 0.05
    (KaLM's 0.01 is a bench/quality.py ablation, chosen on dev); an explicit value wins."""
    from embedfactory.training.gist import GISTLoss
    from embedfactory.training.job import loss_line

    gist = TrainConfig(loss="gist", guide_model="embedded:all-MiniLM-L6-v2")
    assert gist.softmax_temperature() == 0.01 and TrainConfig().softmax_temperature() == 0.05
    assert TrainConfig(temperature=0.02).softmax_temperature() == 0.02
    assert loss_line(gist).endswith("temperature 0.01") and loss_line(TrainConfig()).endswith("temperature 0.05")
    model = load_student(TrainConfig(), pick_device("cpu")).eval()
    built = make_loss(gist, model, TABLE, pick_device("cpu"))
    assert isinstance(built, GISTLoss) and built.temperature == 0.01
    features, labels = batch(model)
    with torch.no_grad():  # the loss really runs at the resolved default
        q, p, n = (model(f)["sentence_embedding"] for f in features)
        got = make_loss(TrainConfig(), model, TABLE, pick_device("cpu"))(features, labels).item()
    texts = COLUMNS[1] + COLUMNS[2]
    assert got == pytest.approx(in_batch_infonce(q, torch.cat([p, n]), texts, 0.05).item(), rel=1e-5)
    assert got != pytest.approx(in_batch_infonce(q, torch.cat([p, n]), texts, 0.01).item(), rel=1e-3)
