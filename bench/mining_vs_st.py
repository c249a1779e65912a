"""Our filter + miner vs sentence-transformers' `mine_hard_negatives`, same model, data and window.

Each side runs in its own subprocess (so peak memory is its own): load the model (not timed), then
embed, search and mine the same (anchor, positive) pairs from STS Benchmark (score >= 4) with
all-MiniLM-L6-v2, `top` sampling, a rank window and a 5% relative margin. Prints rows per second,
peak RSS growth during the work, how far the kept sets agree (anchors given all their negatives)
and how far the mined negatives agree (mean Jaccard per anchor). Both remove the candidates above
the margin first, then take the window. Ours also computes the consistency verdicts in the same
pass; theirs does not filter. Anchors that repeat are keyed once on both sides.

    python bench/mining_vs_st.py [--negatives 3] [--range-min 10] [--range-max 50]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

from embedfactory.config import EMBEDDED_EMBEDDER
from embedfactory.eval.paired import sts_pairs
from embedfactory.models import embedding_model_path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(rows, model, args) -> dict[str, list[str]]:
    from embedfactory.filter.consistency import Mining, encoder, ranking_consistency

    mining = Mining(args.negatives, args.range_min, args.range_max, relative_margin=0.05)
    verdicts = ranking_consistency(rows, encoder(model), topk=None, mining=mining)
    return {r["anchor"]: v["mined_negatives"] for r, v in zip(rows, verdicts)}


def run_st(rows, model, args) -> dict[str, list[str]]:
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    data = Dataset.from_list([{"anchor": r["anchor"], "positive": r["positive"]} for r in rows])
    mined = mine_hard_negatives(data, model, range_min=args.range_min, range_max=args.range_max,
                                relative_margin=0.05, num_negatives=args.negatives, sampling_strategy="top",
                                output_format="n-tuple", batch_size=64, verbose=False)
    return {row["anchor"]: [row[f"negative_{i}"] for i in range(1, args.negatives + 1)] for row in mined}


def worker(args) -> None:
    from sentence_transformers import SentenceTransformer

    rows = sts_pairs()
    model = SentenceTransformer(embedding_model_path(EMBEDDED_EMBEDDER), device="cpu")
    model.encode(["warm up"])
    before = peak_rss_mib()
    started = time.perf_counter()
    mined = (run_ours if args.worker == "ours" else run_st)(rows, model, args)
    seconds = time.perf_counter() - started
    json.dump({"rows": len(rows), "seconds": seconds, "peak_rss_mib": peak_rss_mib(),
               "rss_growth_mib": peak_rss_mib() - before, "mined": mined}, open(args.out, "w"))


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--negatives", type=int, default=3)
    cli.add_argument("--range-min", type=int, default=10)
    cli.add_argument("--range-max", type=int, default=50)
    cli.add_argument("--worker", choices=["ours", "st"])
    cli.add_argument("--out")
    args = cli.parse_args()
    if args.worker:
        return worker(args)
    results = {}
    for side in ("st", "ours", "st", "ours"):  # twice each, alternating; the best time counts
        out = tempfile.mktemp(suffix=".json")
        subprocess.run([sys.executable, __file__, "--worker", side, "--out", out, "--negatives",
                        str(args.negatives), "--range-min", str(args.range_min), "--range-max",
                        str(args.range_max)], check=True, capture_output=True)
        result = json.load(open(out))
        if side not in results or result["seconds"] < results[side]["seconds"]:
            results[side] = result
    ours, st = results["ours"], results["st"]
    # theirs keeps an anchor only with all its negatives found: compare the kept sets on that rule
    kept_ours = {a for a, negatives in ours["mined"].items() if len(negatives) == args.negatives}
    kept_st = set(st["mined"])
    shared = sorted(kept_ours & kept_st)
    jaccard = [len(set(ours["mined"][a]) & set(st["mined"][a])) / max(1, len(set(ours["mined"][a]) | set(st["mined"][a])))
               for a in shared]
    print(f"{ours['rows']} pairs, window [{args.range_min}, {args.range_max}), {args.negatives} negatives, margin 5%")
    for name, r in (("ours (filter + miner)", ours), ("sentence-transformers", st)):
        print(f"{name:22} {r['rows'] / r['seconds']:8.1f} rows/s  {r['seconds']:6.2f} s  "
              f"peak RSS {r['peak_rss_mib']:7.0f} MiB (+{r['rss_growth_mib']:.0f} during the work)")
    print(f"speed ratio ours/theirs: {st['seconds'] / ours['seconds']:.2f} (target >= 1); memory ratio "
          f"ours/theirs: peak RSS {ours['peak_rss_mib'] / st['peak_rss_mib']:.2f}, growth during the work "
          f"{ours['rss_growth_mib'] / max(st['rss_growth_mib'], 1):.2f} (target <= 1)")
    print(f"kept sets: ours {len(kept_ours)}, theirs {len(kept_st)}, both {len(shared)} "
          f"(Jaccard {len(shared) / max(1, len(kept_ours | kept_st)):.3f}); on those, mean Jaccard of mined "
          f"negatives {sum(jaccard) / max(1, len(jaccard)):.3f}, identical {sum(j == 1 for j in jaccard) / max(1, len(jaccard)):.3f}")


if __name__ == "__main__":
    main()
