"""Teacher labels: the round trip's rank, hard negatives near the top of the teacher's ranking with a
positive-relative ceiling, and the scores the student learns the margins of."""
import numpy as np
import pytest

from embedfactory.filter.labels import label


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_negatives_come_from_the_teachers_top_30_below_95_percent_of_the_positive_hardest_first():
    # one query; the teacher's scores of 40 documents fall from 0.99 down by 0.01 each
    scores = np.array([0.99 - 0.01 * i for i in range(40)], dtype=np.float32)
    docs = unit(np.stack([scores, np.sqrt(1 - scores ** 2)], axis=1))
    query = unit([[1.0, 0.0]])
    found = label(query, docs, positives=[5], count=4)  # the positive is the 6th best (score 0.94)
    assert found.rank == [6]
    # 0.95 x 0.94 = 0.893: documents 0..9 (0.99..0.90) are too close to trust; of the trusted ones
    # (10, 11, ...) the two hardest are skipped, then come ranks 3-30 of the trusted, hardest first
    assert found.negatives == [[12, 13, 14, 15]]
    assert found.scores[0] == pytest.approx([0.94, 0.87, 0.86, 0.85, 0.84], abs=1e-5)


def test_the_positive_is_never_its_own_negative_and_ranks_past_30_are_not_drawn():
    scores = np.array([0.9, 0.5, 0.45, 0.4] + [0.1 - 0.001 * i for i in range(40)], dtype=np.float32)
    docs = unit(np.stack([scores, np.sqrt(1 - scores ** 2)], axis=1))
    found = label(unit([[1.0, 0.0]] * 2), docs, positives=[2, 0], count=100)
    assert found.rank == [3, 1]
    assert found.negatives[1] == list(range(3, 31))  # trusted 1, 2, 3, ...: the window [2, 30)
    assert found.negatives[0] == list(range(5, 33))  # positive 0.45: 0.9 and 0.5 are not trusted


def test_wrong_shapes_and_ranks_are_refused():
    docs = unit(np.eye(3))
    with pytest.raises(ValueError, match="2 queries but 1 positives"):
        label(docs[:2], docs, [0], 1)
