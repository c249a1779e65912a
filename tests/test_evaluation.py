import math

import numpy as np

from embedfactory.evaluation import pair_retrieval
from embedfactory.training.trainer import hard_negatives

VECTORS = {"q1": [1, 0], "q2": [0, 1], "d1": [0.9, 0.1], "d2": [0.8, 0.6], "d3": [0.1, 0.9]}


def embed(texts):
    vectors = np.array([VECTORS[t] for t in texts], dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_pair_retrieval_scores_ranks():
    # q1's document d2 ranks 2nd (behind d1); q2's document d3 ranks 1st
    scores = pair_retrieval(embed, ["q1", "q2"], ["d1", "d2", "d3"], relevant=[1, 2])
    assert scores["mrr@10"] == 0.75 and scores["recall@10"] == 1.0
    assert math.isclose(scores["ndcg@10"], (1 / math.log2(3) + 1) / 2)


def test_training_negatives_take_the_generated_one_then_the_mined_ones():
    row = {"negative": "gen", "mined_negatives": ["m1", "m2", "m3"]}
    assert hard_negatives(row, 2) == ["gen", "m1", "m2"]
    assert hard_negatives({"negative": None, "mined_negatives": None}, 3) == []
