"""How well the ranking-consistency filter finds bad pairs, on real data.

Takes STS Benchmark pairs scored >= 4 (real paraphrases), replaces 20% of the positives with a random
other sentence, runs the filter with all-MiniLM-L6-v2, and prints precision and recall of the
dropped rows against the corrupted ones for several k.

    python bench/filter_quality.py [--data ../shared/data/stsbenchmark/sts-train.csv] [--fraction 0.2]
"""
from __future__ import annotations

import argparse
import time

from embedfactory.config import EMBEDDED_EMBEDDER
from embedfactory.eval.paired import corrupt_positives, sts_pairs
from embedfactory.filter.consistency import corpus_of, encoder, ranking_consistency
from embedfactory.models import load_embedder
from embedfactory.filter.search import auto_topk


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--data", help="an STS Benchmark file (default: ../shared's train split, else the "
                     "bundled test split)")
    cli.add_argument("--fraction", type=float, default=0.2)
    cli.add_argument("--model", default=EMBEDDED_EMBEDDER)
    args = cli.parse_args()
    rows, corrupted = corrupt_positives(sts_pairs(args.data), args.fraction, seed=0)
    corpus = len(corpus_of(rows))
    embed = encoder(load_embedder(args.model))
    cache: dict[str, object] = {}

    def cached(texts):  # embed once, reuse for every k
        missing = [t for t in texts if t not in cache]
        if missing:
            cache.update(zip(missing, embed(missing)))
        import numpy as np
        return np.stack([cache[t] for t in texts])

    print(f"{len(rows)} pairs (STS >= 4), {len(corrupted)} positives corrupted, corpus {corpus} texts")
    print(f"{'k':>6} {'dropped':>8} {'precision':>10} {'recall':>7} {'seconds':>8}")
    for k in (1, 3, 10, auto_topk(corpus), 50):
        started = time.perf_counter()
        verdicts = ranking_consistency(rows, cached, topk=k)
        seconds = time.perf_counter() - started
        dropped = {r["example_id"] for r, v in zip(rows, verdicts) if not v["kept"]}
        caught = len(dropped & corrupted)
        precision = caught / len(dropped) if dropped else float("nan")
        label = f"{k}" + ("*" if k == auto_topk(corpus) else "")
        print(f"{label:>6} {len(dropped):>8} {precision:>10.3f} {caught / len(corrupted):>7.3f} {seconds:>8.2f}")
    print("* the default k for this corpus size")


if __name__ == "__main__":
    main()
