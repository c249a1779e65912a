import math

import torch

from embedfactory.training.gist import false_negative_mask, gist_loss


def unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_mask_matches_a_hand_computed_example():
    guide = torch.tensor([[0.9, 0.95, 0.2], [0.5, 0.6, 0.59]])
    pair = torch.tensor([0.9, 0.6])
    # ties count (the pair's own cell is kept by gist_loss, not by the mask)
    assert false_negative_mask(guide, pair, 0.0, "absolute").tolist() == [[True, True, False], [False, True, False]]
    assert false_negative_mask(guide, pair, 0.05, "absolute").tolist() == [[True, True, False], [False, True, True]]
    assert false_negative_mask(guide, pair, 0.05, "relative").tolist() == [[True, True, False], [False, True, True]]


def test_a_planted_false_negative_is_masked_and_the_rest_is_plain_infonce():
    # rows 0 and 1 are paraphrases (the guide knows); row 2 is unrelated
    a = unit([1, 0, 0], [0.9, 0.1, 0], [0, 0, 1])
    p = unit([1, 0.1, 0], [0.95, 0.05, 0], [0, 0.1, 1])
    with_guide = gist_loss(a, p, None, a, p, None, temperature=1.0)
    # by hand: row r keeps its pair, and drops every candidate the guide puts above that pair
    sim = lambda x, y: (x @ y.T)  # noqa: E731 (inputs are unit vectors)
    total = 0.0
    for r in range(3):
        pair = sim(a, p)[r, r]
        cands = [sim(a, p)[r], sim(a, a)[r], sim(p, p)[r]]
        kept = [s for block in cands for j, s in enumerate(block.tolist())
                if s < pair.item() or (block is cands[0] and j == r)]
        total += -pair.item() + math.log(sum(math.exp(s) for s in kept))
    assert math.isclose(with_guide.item(), total / 3, rel_tol=1e-5)
    # the planted paraphrase (row 1 for row 0) is masked: the loss is lower than without masking
    blind = gist_loss(a, p, None, torch.eye(3), torch.eye(3), None, temperature=1.0)
    assert with_guide.item() < blind.item()


def test_negatives_take_part_and_gradients_flow():
    torch.manual_seed(0)
    a, p, n = (torch.randn(4, 8, requires_grad=True) for _ in range(3))
    loss = gist_loss(a, p, n, a.detach(), p.detach(), n.detach(), temperature=0.05)
    loss.backward()
    assert math.isfinite(loss.item()) and a.grad.abs().sum() > 0 and n.grad.abs().sum() > 0


def test_a_copy_of_the_positive_is_never_a_negative():
    # rows 0 and 1 share the same positive text, so the guide's scores tie exactly
    a = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    p = unit([1, 1, 0], [1, 1, 0], [0, 0.2, 1])
    ap = a @ p.T
    assert ap[0, 0] == ap[0, 1]
    mask = false_negative_mask(ap, ap.diagonal(), 0.0, "absolute")
    assert mask[0, 1] and mask[1, 0] and not mask[0, 2]
