"""MarginMSE: the loss, the teacher's scores (bi-encoder and cross-encoder) and training with it."""
import math

import numpy as np
import pytest
import torch

from embedfactory.config import EMBEDDED_EMBEDDER, TrainConfig
from embedfactory.models import embedding_model_path
from embedfactory.training.job import model_card
from embedfactory.training.margin import margin_mse_loss, student_margins
from embedfactory.training.teacher import is_cross_encoder, teacher_scores
from embedfactory.training.trainer import hard_negatives, train_contrastive
from test_trainer import ROWS

MINED = [{**r, "mined_negatives": [f"Unrelated note {i}: opening hours of the branch."]} for i, r in enumerate(ROWS)]


def test_the_loss_is_zero_when_the_student_has_the_teachers_margins():
    torch.manual_seed(0)
    q, p, n = torch.randn(3, 8), torch.randn(3, 8), torch.randn(3, 8)
    assert margin_mse_loss(q, p, n, student_margins(q, p, n)).item() == pytest.approx(0.0, abs=1e-10)


def test_margins_are_dot_product_differences_per_negative_of_its_row():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.8, 0.6], [0.6, 0.8]])
    n = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])  # row 0 has two negatives, row 1 one
    owners = torch.tensor([0, 0, 1])
    assert student_margins(q, p, n, owners).tolist() == pytest.approx([0.8, -0.2, 0.0])
    teacher = torch.tensor([0.5, 0.5, 0.5])
    want = ((0.8 - 0.5) ** 2 + (-0.2 - 0.5) ** 2 + (0.0 - 0.5) ** 2) / 3
    assert margin_mse_loss(q, p, n, teacher, owners).item() == pytest.approx(want)
    with pytest.raises(ValueError, match="owners"):
        margin_mse_loss(q, p, n, teacher)


def test_a_gradient_step_moves_every_student_margin_toward_the_teachers():
    torch.manual_seed(1)
    q, p, n = (torch.randn(4, 16, requires_grad=True) for _ in range(3))
    owners = torch.tensor([0, 1, 2, 3])
    before = student_margins(q, p, n, owners).detach()
    teacher = before + torch.tensor([1.0, -1.0, 0.5, -0.5])
    margin_mse_loss(q, p, n, teacher, owners).backward()
    with torch.no_grad():
        after = student_margins(q - 0.01 * q.grad, p - 0.01 * p.grad, n - 0.01 * n.grad, owners)
    assert ((after - teacher).abs() < (before - teacher).abs()).all()
    assert (torch.sign(after - before) == torch.sign(teacher - before)).all()


@pytest.mark.slow
def test_bi_encoder_teacher_scores_are_cosines_of_bare_queries_and_the_trainers_negatives():
    from sentence_transformers import SentenceTransformer

    scores = teacher_scores(MINED, EMBEDDED_EMBEDDER, mined=1, batch_size=4, device="cpu")
    model = SentenceTransformer(embedding_model_path(EMBEDDED_EMBEDDER), device="cpu")
    for row, got in zip(MINED, scores):
        docs = [row["positive"], *hard_negatives(row, 1)]
        q = model.encode([row["anchor"]], normalize_embeddings=True)[0]
        want = model.encode(docs, normalize_embeddings=True) @ q
        assert len(got) == len(docs) == (3 if row["negative"] else 2)
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert not is_cross_encoder(embedding_model_path(EMBEDDED_EMBEDDER))


@pytest.mark.slow
def test_a_cross_encoder_teacher_scores_each_query_document_pair(tmp_path):
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)  # the relevance head starts random; saved, it is fixed
    CrossEncoder(embedding_model_path(EMBEDDED_EMBEDDER), num_labels=1, device="cpu").save(str(tmp_path / "ce"))
    assert is_cross_encoder(str(tmp_path / "ce")) and is_cross_encoder("cross-encoder/ms-marco-MiniLM-L6-v2")
    scores = teacher_scores(MINED, str(tmp_path / "ce"), mined=1, device="cpu")
    model = CrossEncoder(str(tmp_path / "ce"), device="cpu")
    for row, got in zip(MINED, scores):
        want = model.predict([(row["anchor"], d) for d in [row["positive"], *hard_negatives(row, 1)]])
        np.testing.assert_allclose(got, want, atol=1e-5)


TOPICS = [
    ("reset my card PIN", "Resetting a card PIN at an ATM or in the app.", "Ordering a replacement card."),
    ("wing lift at low speed", "Lift coefficients of wings at low Reynolds numbers.",
     "Drag of bodies in supersonic flow."),
    ("I was charged twice", "Disputing a duplicate card payment.", "Paying a bill by bank transfer."),
    ("where is my new card", "Tracking the delivery of a new debit card.", "Closing a credit card account."),
    ("boil an egg", "Simmer the egg for nine minutes, then cool it in cold water.", "Frying an egg sunny side up."),
    ("train delays today", "Live departures and delays on the regional rail network.", "Buying a monthly bus pass."),
    ("fix a flat bike tyre", "Patching an inner tube: find the hole, glue, press the patch.",
     "Adjusting bicycle gears."),
    ("python list sorting", "list.sort() sorts in place; sorted() returns a new list.",
     "Reading a CSV file in Python."),
    ("symptoms of the flu", "Fever, cough, sore throat and aching muscles are typical of influenza.",
     "How vaccines are stored in clinics."),
    ("renew a passport", "Passport renewals are filed online with a photo and the old passport.",
     "Applying for a driving licence."),
]
PHRASINGS = ["{}", "how do I {}", "question: {}", "help with {}"]


def rows_for_margin_training() -> list[dict]:
    rows = []
    for i, (query, positive, negative) in enumerate(TOPICS):
        for j, phrasing in enumerate(PHRASINGS):
            row = {"anchor": phrasing.format(query), "positive": positive, "instruction": "Find the answer",
                   "negative": negative if j != 3 else None,  # the last phrasing: mined negatives only
                   "mined_negatives": [TOPICS[(i + 1) % len(TOPICS)][1]] if j != 2 else None}
            if j % 2 == 0:  # half of the rows bring their teacher's scores: the positive far above
                row["teacher_scores"] = [0.9] + [0.1] * len(hard_negatives(row, 1))
            rows.append(row)
    rows.append({"anchor": "no negatives here", "positive": "none at all", "negative": None,
                 "mined_negatives": [], "instruction": "Find the answer"})
    return rows


@pytest.mark.slow
def test_margin_mse_training_on_minilm_runs_skips_rows_without_negatives_and_learns(tmp_path):
    rows = rows_for_margin_training()
    cfg = TrainConfig(loss="margin_mse", teacher_model=EMBEDDED_EMBEDDER, epochs=3, batch_size=8,
                      learning_rate=1e-4, device="cpu")
    report = train_contrastive(rows, cfg, str(tmp_path / "model"))
    assert report["rows"] == 40 and report["skipped_rows"] == 1 and report["steps"] == 15
    losses = report["losses"]
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])  # the last epoch against the first
    card = model_card({"name": "d", "version": "v1", "sha256": "0" * 64}, cfg, report)
    assert f"MarginMSE (GPL), teacher `{EMBEDDED_EMBEDDER}` (bi-encoder, cosine)" in card
    assert "40 rows (1 without a hard negative left out)" in card


def test_infonce_with_margins_on_the_logit_scale_trains_and_says_so(tmp_path):
    rows = rows_for_margin_training()
    cfg = TrainConfig(loss="margin_mse_infonce", teacher_model=EMBEDDED_EMBEDDER, epochs=3, batch_size=8,
                      learning_rate=1e-4, device="cpu")
    report = train_contrastive(rows, cfg, str(tmp_path / "model"))
    assert report["rows"] == 40 and report["skipped_rows"] == 1
    assert sum(report["losses"][-5:]) < 0.8 * sum(report["losses"][:5])
    card = model_card({"name": "d", "version": "v1", "sha256": "0" * 64}, cfg, report)
    assert "plus InfoNCE over in-batch and hard negatives, both on the logit scale" in card
    with pytest.raises(ValueError, match="needs teacher_model"):
        TrainConfig(loss="margin_mse_infonce")


def test_rows_whose_teacher_scores_are_too_few_are_refused(tmp_path):
    rows = [{**r, "teacher_scores": [0.9]} for r in MINED]
    cfg = TrainConfig(loss="margin_mse", teacher_model=EMBEDDED_EMBEDDER, device="cpu")
    with pytest.raises(ValueError, match="has 1 teacher_scores; it needs 3"):
        train_contrastive(rows, cfg, str(tmp_path / "model"))


def test_the_teachers_scores_are_stored_beside_the_dataset_and_reused(tmp_path, monkeypatch):
    from embedfactory.store import Store
    from embedfactory.training import job, trainer

    store, card = Store(str(tmp_path / "store")), {"name": "d", "version": "v1", "sha256": "1" * 64}
    rows = [*MINED, {"anchor": "alone", "positive": "no negative", "negative": None, "mined_negatives": [],
                     "instruction": "Find it"}]
    cfg = TrainConfig(loss="margin_mse", teacher_model=EMBEDDED_EMBEDDER, device="cpu")
    path, labelled = job.pseudo_labels(store, card, rows, cfg)
    assert path.startswith(store.path("labels", "d")) and store.exists(path)
    want = teacher_scores(rows[:-1], EMBEDDED_EMBEDDER, mined=1)
    assert [r["anchor"] for r in labelled] == [r["anchor"] for r in MINED]  # the row without a negative left out
    for got, expected in zip(labelled, want, strict=True):
        assert got["teacher_scores"] == pytest.approx(expected, abs=1e-6)
    stored = store.read_table(path).to_pylist()
    assert [r["teacher_scores"] for r in stored] == [r["teacher_scores"] for r in labelled]

    monkeypatch.setattr(trainer, "with_teacher_scores", lambda *a: pytest.fail("scored again"))
    again_path, again = job.pseudo_labels(store, card, rows, cfg)
    assert again_path == path and [r["teacher_scores"] for r in again] == [r["teacher_scores"] for r in stored]
    with pytest.raises(pytest.fail.Exception, match="scored again"):  # another teacher: labelled anew
        job.pseudo_labels(store, card, rows, TrainConfig(loss="margin_mse", teacher_model="other", device="cpu"))
