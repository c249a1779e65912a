"""Teacher labels for (query, positive) pairs, GPL-style: a stronger embedding model (the teacher)
ranks the whole corpus for each query; from that ranking come

- the round trip: the positive's rank under the teacher (a generated query whose own document the
  teacher does not put in its top k asks for something else);
- hard negatives near the top of the teacher's ranking (NEGATIVE_WINDOW, hardest first), leaving
  out the positive and every candidate the teacher scores above 95% of the positive's score
  (NV-Retriever's positive-relative filter: such a "negative" is likely relevant too);
- the teacher's scores of the positive and of each negative, stored on the row, whose margins the
  student learns (MarginMSE, training/margin.py).

The student's own ranking is not used: a filter or miner judged by the student keeps what it already
solves and picks negatives it already separates. Embeddings are L2-normalised; scores are cosines.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .consistency import Mining, pick_negatives
from .search import search

# the trusted candidates' window hard negatives come from, [min, max) 0-based: ranks 3-30 once the
# positive and every candidate above 95% of its score are set aside
NEGATIVE_WINDOW = (2, 30)
RELATIVE_MARGIN = 0.05


@dataclass
class Labels:
    rank: list[int]              # the positive's rank under the teacher, 1-based
    negatives: list[list[int]]   # document indices, hardest first
    scores: list[list[float]]    # the teacher's score of the positive, then of each negative


def label(queries: np.ndarray, docs: np.ndarray, positives: list[int], count: int,
          window: tuple[int, int] = NEGATIVE_WINDOW, relative_margin: float = RELATIVE_MARGIN) -> Labels:
    """Labels for query i (row i of `queries`) whose positive is document `positives[i]`: at most
    `count` negatives each (fewer where the window holds fewer trusted candidates). The negatives are
    picked as the flow's miner picks them (`filtering.pick_negatives`), from the teacher's ranking."""
    if len(queries) != len(positives):
        raise ValueError(f"{len(queries)} queries but {len(positives)} positives")
    mining = Mining(negatives=count, range_min=window[0], range_max=window[1], relative_margin=relative_margin,
                    sampling="top")
    found = search(torch.from_numpy(np.asarray(queries, dtype=np.float32)),
                   torch.from_numpy(np.asarray(docs, dtype=np.float32)), torch.tensor(positives),
                   2 * window[1] + 1)  # room for the positive and the untrusted candidates above the window
    out = Labels([], [], [])
    for row, positive in enumerate(positives):
        scores, indices = found.scores[row].tolist(), found.indices[row].tolist()
        picked, _ = pick_negatives(scores, indices, float(found.positive[row]), {positive}, mining)
        score_of = dict(zip(indices, scores))
        out.rank.append(int(found.rank[row]))
        out.negatives.append(picked)
        out.scores.append([float(found.positive[row])] + [score_of[j] for j in picked])
    return out
