"""Is a difference between two models on the same queries more than noise? A paired bootstrap.

Both models are scored on the same judged queries; the queries are resampled with replacement
(`resamples` times) and the mean per-query difference taken each time: the 2.5th and 97.5th
percentiles bound a 95% interval. On Cranfield's 225 queries a one-point nDCG@10 change has an
interval about +-1.3 points wide (bench/RESULTS.md, the quality benchmark), so a difference is a finding only
when its interval excludes 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Difference:
    delta: float   # mean over queries of (b - a)
    low: float     # 95% interval
    high: float
    queries: int

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"delta {self.delta:+.4f} ci [{self.low:+.4f}, {self.high:+.4f}]"


def paired_bootstrap(a: dict[str, float], b: dict[str, float], resamples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> Difference:
    """b - a over the queries both score (query id -> score), with a bootstrap interval."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two score sets share no query")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    diff = np.array([b[q] - a[q] for q in common], dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[draws].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Difference(float(diff.mean()), float(low), float(high), len(common))


def mean_scores(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per-query mean over several runs (e.g. seeds of one recipe): the recipe's score per query."""
    if not runs:
        raise ValueError("no runs to average")
    common = set(runs[0]).intersection(*runs[1:])
    return {q: float(np.mean([r[q] for r in runs])) for q in sorted(common)}
