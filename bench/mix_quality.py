"""Does the default brainstormed mix do harm? Flow `synth` exactly as `make run` runs it (embedded
generator, no corpus, the default size and task mix, gates and filter; `--personas N` to change the
size), then the default
training (all-MiniLM-L6-v2, in-batch InfoNCE, 1 epoch) and the flow's own evaluation, base vs tuned,
on Cranfield's real queries and STS-B.

Issue 14's bar: neither score lowered by more than 0.5 point. Brainstormed data is not about any user's
domain; its job is to not hurt while grounded data (bench/quality.py) does the teaching.

    python bench/mix_quality.py [--personas 14] [--store ./bench-mix]

Prints `quality <set> <metric> base X tuned Y delta Z` per set, the stage summary (rows, rejects per
gate) and the time. A rerun with the same arguments reuses every shard and the trained model.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline machines: no telemetry errors in the log
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from embedfactory.config import SynthParams  # noqa: E402
from embedfactory.report.summary import format_table  # noqa: E402

ALLOWED_DROP = 0.005  # half a point


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--personas", type=int, default=SynthParams().synth.personas,
                     help="personas (default: make run's; each with the default tasks and examples)")
    cli.add_argument("--store", default="./bench-mix")
    cli.add_argument("--seed", type=int, default=0)
    args = cli.parse_args()
    from flows.synth import synth

    started = time.monotonic()
    params = SynthParams(store=args.store, synth={"personas": args.personas, "seed": args.seed})
    result = synth(params)
    print(format_table(result["summary"]))
    published = result["dataset"]["rows"]
    print(f"\npublished {published} rows from {args.personas} personas ({result['dataset']['by_task_type']}); "
          f"trained {result['training']['steps']} steps")
    worst = 0.0
    for row in result["training"]["evaluation"]["rows"]:
        if row["main"]:
            print(f"quality {row['set']} {row['metric']} base {row['base']:.4f} tuned {row['fine_tuned']:.4f} "
                  f"delta {row['delta']:+.4f}")
            worst = min(worst, row["delta"])
    verdict = "within" if worst >= -ALLOWED_DROP else "OUTSIDE"
    print(f"largest drop {-worst:.4f}: {verdict} the {ALLOWED_DROP} bound")
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
