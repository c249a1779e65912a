"""Listwise distillation (kl_infonce): the loss on hand-worked lists, and training with it."""
import math

import pytest
import torch
import torch.nn.functional as F

from embedfactory.config import EMBEDDED_EMBEDDER, TrainConfig
from embedfactory.training.job import model_card
from embedfactory.training.listwise import listwise_kl_loss, row_logits
from embedfactory.training.margin import student_margins
from embedfactory.training.trainer import train_contrastive
from test_margin import rows_for_margin_training


def test_rows_of_different_lengths_become_padded_lists_of_minus_margins():
    margins = torch.tensor([0.5, 1.0, 2.0])
    owners = torch.tensor([0, 0, 2])  # row 0: two negatives, row 1: none, row 2: one
    got = row_logits(margins, owners, 3)
    assert got.shape == (3, 3)
    assert got[0].tolist() == [0.0, -0.5, -1.0]
    assert got[1, 0] == 0 and (got[1, 1:] < -1e3).all()
    assert got[2, :2].tolist() == [0.0, -2.0] and got[2, 2] < -1e3


def test_the_loss_is_the_kl_divergence_of_each_rows_softmax_averaged_over_rows():
    teacher, student = torch.tensor([1.0, 3.0, 0.5]), torch.tensor([2.0, 1.0, -1.0])
    owners = torch.tensor([0, 0, 1])

    def kl(t: list[float], s: list[float]) -> float:
        pt, ps = (F.softmax(torch.tensor(x, dtype=torch.float32), -1) for x in (t, s))
        return float((pt * (pt.log() - ps.log())).sum())
    want = (kl([0, -1, -3], [0, -2, -1]) + kl([0, -0.5], [0, 1])) / 2
    assert listwise_kl_loss(student, teacher, owners, 2).item() == pytest.approx(want, rel=1e-5)
    # a row without negatives adds nothing but counts in the mean
    assert listwise_kl_loss(student, teacher, owners, 4).item() == pytest.approx(want / 2, rel=1e-5)


def test_the_loss_is_zero_only_at_the_teachers_margins():
    torch.manual_seed(0)
    q, p, n = torch.randn(3, 8), torch.randn(3, 8), torch.randn(6, 8)
    owners = torch.tensor([0, 0, 1, 1, 2, 2])
    mine = student_margins(q, p, n, owners)
    assert listwise_kl_loss(mine, mine, owners, 3).item() == pytest.approx(0.0, abs=1e-6)
    assert listwise_kl_loss(mine, mine + 1.0, owners, 3).item() > 0.01  # wider margins are another ranking
    assert listwise_kl_loss(mine, mine.flip(0), owners, 3).item() > 0.01


def test_a_gradient_step_brings_the_students_list_toward_the_teachers():
    torch.manual_seed(1)
    q, p, n = (torch.randn(k, 16, requires_grad=True) for k in (4, 4, 8))
    owners = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    teacher = torch.tensor([2.0, 0.1, -1.0, 3.0, 0.5, 0.5, 4.0, 1.0])
    before = listwise_kl_loss(student_margins(q, p, n, owners), teacher, owners, 4)
    before.backward()
    with torch.no_grad():
        after = listwise_kl_loss(student_margins(q - 0.05 * q.grad, p - 0.05 * p.grad, n - 0.05 * n.grad, owners),
                                 teacher, owners, 4)
    assert after < before


@pytest.mark.slow
def test_kl_infonce_training_on_minilm_learns_and_says_so(tmp_path):
    rows = rows_for_margin_training()
    cfg = TrainConfig(loss="kl_infonce", teacher_model=EMBEDDED_EMBEDDER, epochs=3, batch_size=8,
                      learning_rate=1e-4, device="cpu")
    report = train_contrastive(rows, cfg, str(tmp_path / "model"))
    assert report["rows"] == 40 and report["skipped_rows"] == 1
    assert all(math.isfinite(x) for x in report["losses"])
    assert sum(report["losses"][-5:]) < 0.8 * sum(report["losses"][:5])
    card = model_card({"name": "d", "version": "v1", "sha256": "0" * 64}, cfg, report)
    assert f"listwise distillation (RocketQAv2), teacher `{EMBEDDED_EMBEDDER}` (bi-encoder, cosine)" in card
    with pytest.raises(ValueError, match="needs teacher_model"):
        TrainConfig(loss="kl_infonce")
