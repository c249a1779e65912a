"""Throughput and memory of the block search at sizes beyond one run, on random unit vectors.

Prints query-document pairs scored per second and the peak RSS growth for a few block sizes, to
show that memory follows the blocks (plus the embeddings), not the score matrix of the corpus.

    python bench/search_scale.py [--queries 5000] [--docs 200000] [--dim 384]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from embedfactory.filter.search import search


def one(queries: int, docs: int, dim: int, doc_block: int) -> None:
    torch.manual_seed(0)
    q = F.normalize(torch.randn(queries, dim), dim=-1)
    d = F.normalize(torch.randn(docs, dim), dim=-1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    search(q, d, torch.randint(0, docs, (queries,)), top=102, query_block=1024, doc_block=doc_block)
    seconds = time.perf_counter() - started
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    full = queries * docs * 4 / 2**20
    print(f"doc_block {doc_block:>7}: {queries * docs / seconds / 1e6:8.1f} M pairs/s, {seconds:6.2f} s, "
          f"peak RSS +{growth:6.0f} MiB (the full score matrix would be {full:,.0f} MiB)")


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--queries", type=int, default=5000)
    cli.add_argument("--docs", type=int, default=200000)
    cli.add_argument("--dim", type=int, default=384)
    cli.add_argument("--block", type=int)
    args = cli.parse_args()
    if args.block:
        return one(args.queries, args.docs, args.dim, args.block)
    for block in (4096, 16384, 65536):  # each in a fresh process, so peaks do not mix
        subprocess.run([sys.executable, __file__, "--queries", str(args.queries), "--docs", str(args.docs),
                        "--dim", str(args.dim), "--block", str(block)], check=True)


if __name__ == "__main__":
    main()
