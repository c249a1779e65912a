import math

import torch

from embedfactory.training.loss import in_batch_infonce


def test_matches_a_hand_computed_value():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    docs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # two positives, one hard negative
    loss = in_batch_infonce(anchors, docs, ["p0", "p1", "n0"], temperature=1.0)
    c = 1 / math.sqrt(2)
    expected = -math.log(math.e / (math.e + 1 + math.exp(c)))  # both rows are symmetric
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)


def test_a_candidate_with_the_same_text_as_the_positive_is_not_a_negative():
    anchors = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    docs = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    same_label = in_batch_infonce(anchors, docs, ["billing", "billing"], temperature=0.05)
    different = in_batch_infonce(anchors, docs, ["billing", "refund"], temperature=0.05)
    assert same_label.item() < 1e-6 < different.item()
