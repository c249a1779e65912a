"""Does the filter's cost per row stay flat as a run grows? Time and peak memory of the duplicates
and verdict stages at 1x, 4x and 16x shards, and of the re-hash they replaced.

Each scale runs in its own subprocess (its peak memory is its own) on a fresh store: `--shards` x
scale shards of `--rows-per-shard` (anchor, positive) pairs from STS Benchmark's train split, one row
in 16 a copy of a row of an earlier shard (so duplicates are found); the corpus stage embeds the
documents (not timed: it is per shard already), then the duplicates stage runs in one pass and every
verdict shard searches the whole corpus and reads its duplicates, with the real filter model
(all-MiniLM-L6-v2, loaded before the clock starts) and 7 mined negatives. Gates are off: they are
per-row checks whatever the run's size. The reference is the way verdicts found duplicates before:
each shard re-hashing every earlier shard (`dedupe.find_duplicates`), timed on the same rows.

    python bench/verdict_scaling.py [--shards 4] [--rows-per-shard 64] [--scales 1,4,16]

Ends with `cost per row 16x/1x: X.XX` (duplicates + verdicts seconds per row; target at most 1.2).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import pyarrow as pa

from embedfactory import dedupe, pipeline, schemas
from embedfactory.config import Endpoint, SynthParams
from embedfactory.evaldata import sts_pairs
from embedfactory.stages import consistency
from embedfactory.store import ShardRecord


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def shard_rows(pairs: list[dict], shards: int, per_shard: int) -> list[list[dict]]:
    """`shards` shards of rows; every 16th row (after the first shard) repeats an earlier shard's row."""
    out = []
    for s in range(shards):
        rows = []
        for i in range(per_shard):
            n = s * per_shard + i
            source = pairs[(n * 7) % (s * per_shard)] if s and i % 16 == 5 else pairs[n]
            rows.append({"example_id": f"e{s:05d}-{i}", "task_id": "t", "persona_id": "p", "task_type": "retrieval",
                         "task": "Given a sentence, find one that means the same", "attributes": "{}",
                         "anchor": source["anchor"].upper() if source is not pairs[n] else source["anchor"],
                         "positive": source["positive"], "negative": None, "fields": "{}", "original_fields": "{}",
                         "status": "ok", "revision_status": "skipped"})
        out.append(rows)
    return out


def worker(args) -> None:
    shards = args.shards * args.scale
    pairs = sts_pairs(min_score=0.0)
    if len(pairs) < shards * args.rows_per_shard:
        raise SystemExit(f"{len(pairs)} STS-B pairs, fewer than {shards * args.rows_per_shard} rows asked for")
    store = tempfile.mkdtemp(prefix="verdict-scaling-")
    ctx = pipeline.RunContext(params=SynthParams(store=store, filter={"gates": [], "background_corpus": None}),
                              run_id="bench", run_token="t", generator_url="-", revisor_url="-",
                              generator=Endpoint(), revisor=Endpoint())
    revised = [ctx.stage_dir("revised").commit(pa.Table.from_pylist(rows, schema=schemas.REVISED),
                                               ShardRecord(key=f"{s:05d}", fingerprint="f", rows=len(rows),
                                                           stage="revised"))
               for s, rows in enumerate(shard_rows(pairs, shards, args.rows_per_shard))]
    corpus = [pipeline.run_shard(pipeline.CORPUS, ctx, r.key, [r]) for r in revised]
    consistency.filter_encoder(ctx.params.filter)(["warm up"])  # the model is loaded: not timed
    before = peak_rss_mib()
    started = time.perf_counter()
    repeats = pipeline.find_duplicates(ctx, revised)
    duplicates_s = time.perf_counter() - started
    verdicts = [pipeline.run_shard(pipeline.VERDICTS, ctx, r.key, [r], side=corpus + [d])
                for r, d in zip(revised, repeats)]
    verdicts_s = time.perf_counter() - started - duplicates_s
    peak = peak_rss_mib()
    rows = [[r for r in ctx.stage_dir("revised").read([x.key]).to_pylist()] for x in revised]
    started = time.perf_counter()
    rehashed = sum(sum(bool(d) for d in dedupe.find_duplicates(
        shard, [(r["example_id"], r) for earlier in rows[:i] for r in earlier], ctx.params.filter.near_duplicate_threshold))
        for i, shard in enumerate(rows))
    rehash_s = time.perf_counter() - started
    json.dump({"shards": shards, "rows": sum(len(r) for r in rows), "duplicates_s": duplicates_s,
               "verdicts_s": verdicts_s, "found": sum(r.dropped for r in repeats), "rehash_found": rehashed,
               "dropped": sum(v.dropped for v in verdicts), "rehash_s": rehash_s, "peak_rss_mib": peak,
               "growth_mib": peak - before}, open(args.out, "w"))


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--shards", type=int, default=4, help="shards at 1x")
    cli.add_argument("--rows-per-shard", type=int, default=64)
    cli.add_argument("--scales", default="1,4,16")
    cli.add_argument("--scale", type=int, help=argparse.SUPPRESS)
    cli.add_argument("--out", help=argparse.SUPPRESS)
    args = cli.parse_args()
    if args.scale:
        return worker(args)
    results = {}
    for scale in (int(s) for s in args.scales.split(",")):
        out = tempfile.mktemp(suffix=".json")
        subprocess.run([sys.executable, __file__, "--scale", str(scale), "--out", out, "--shards", str(args.shards),
                        "--rows-per-shard", str(args.rows_per_shard)], check=True)
        results[scale] = json.load(open(out))
    print(f"{'scale':>5} {'shards':>6} {'rows':>6} {'dups':>5} {'re-hash dups':>12} {'duplicates ms/row':>17} {'verdicts ms/row':>15} "
          f"{'re-hash ms/row':>14} {'peak RSS MiB':>12} {'growth MiB':>10}")
    for scale, r in results.items():
        print(f"{scale:>4}x {r['shards']:>6} {r['rows']:>6} {r['found']:>5} {r['rehash_found']:>12} {1000 * r['duplicates_s'] / r['rows']:>17.3f} "
              f"{1000 * r['verdicts_s'] / r['rows']:>15.2f} {1000 * r['rehash_s'] / r['rows']:>14.3f} "
              f"{r['peak_rss_mib']:>12.0f} {r['growth_mib']:>10.0f}")
    first, last = results[min(results)], results[max(results)]
    ratio = lambda key: (last[key] / last["rows"]) / (first[key] / first["rows"])  # noqa: E731
    span = f"{max(results)}x/{min(results)}x"
    print(f"duplicates stage alone {span}: {ratio('duplicates_s'):.2f}; the re-hash it replaced: {ratio('rehash_s'):.2f}")
    total = ((last["duplicates_s"] + last["verdicts_s"]) / last["rows"]) / (
        (first["duplicates_s"] + first["verdicts_s"]) / first["rows"])
    print(f"cost per row {span}: {total:.2f}")


if __name__ == "__main__":
    main()
