"""Are the grounded quality gates calibrated? Reject shares of real queries, per set and gate.

Each real query of a retrieval set is judged as if the grounded stage had written it for each of its
relevant documents (`embedfactory.synth.calibration.real_query_rejects`: the document as the passage, the
stage's attribute draws, the grounded prompt's fixed text and task). Real queries are what grounded
queries should look like, so each gate should reject few of them (target: at most 5% all gates
together). Prints per set each gate's reject share of the (query, relevant document) pairs, the
share any gate rejects, and the share of queries rejected for at least one of their documents; the
`before` column draws the attributes as the grounded stage did until the calibration, with E5's
web-search length mix (`query_length` less than 5 / 5 to 15 / at least 10 words, .4/.4/.2).
No model runs; a few seconds.

    python bench/gate_calibration.py [--sets cranfield,cisi] [--beir DIR ...] [--no-before] [--examples 3]
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedfactory.synth import calibration
from embedfactory.eval import sets as evalsets
from embedfactory.filter import gates  # noqa: E402
from embedfactory.ids import seed_of  # noqa: E402
from embedfactory.task_types import CLARITY, DIFFICULTY, QUERY_LENGTH, QUERY_TYPE, Draw  # noqa: E402


def e5_draw(passage_id: str, index: int, seed: int) -> dict:
    """The grounded stage's attribute draw before the calibration (same seeds, with a length ask)."""
    d = Draw(random.Random(seed_of(seed, "grounded", passage_id, index)), 0, ["English"])
    return {"query_type": d.pick(QUERY_TYPE), "query_length": d.pick(QUERY_LENGTH),
            "clarity": d.pick(CLARITY), "difficulty": d.pick(DIFFICULTY)}


def report(name: str, data, args) -> None:
    now = calibration.real_query_rejects(data, args.seed, examples=args.examples)
    before = None if args.no_before else calibration.real_query_rejects(data, args.seed, draw=e5_draw)
    print(f"\n{name}: {now.queries} queries, {now.pairs} (query, relevant document) pairs")
    print(f"  {'gate':12} {'now':>8}" + ("" if before is None else f" {'before':>8}"))
    rows = [(g, now.gate_share(g), before and before.gate_share(g)) for g in gates.QUERY_GATES]
    rows += [("all gates", now.share, before and before.share),
             ("queries", now.query_share, before and before.query_share)]
    for gate, a, b in rows:
        print(f"  {gate:12} {a:8.1%}" + ("" if before is None else f" {b:8.1%}"))
    for gate, examples in now.examples.items():
        for example in examples:
            print(f"    {gate}: {example}")


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--sets", default="cranfield,cisi", help="shipped retrieval sets, comma-separated ('' for none)")
    cli.add_argument("--beir", action="append", default=[], help="a BEIR folder (repeatable)")
    cli.add_argument("--split", default="test", help="the BEIR folders' qrels split")
    cli.add_argument("--seed", type=int, default=0, help="the attribute draws' seed (a run's synth.seed)")
    cli.add_argument("--no-before", action="store_true", help="skip the draws with E5's length mix")
    cli.add_argument("--examples", type=int, default=3, help="rejected pairs shown per gate")
    args = cli.parse_args()
    for name in filter(None, args.sets.split(",")):
        report(name, evalsets.load(evalsets.SHIPPED[name]), args)
    for folder in args.beir:
        report(folder, evalsets.load_beir(Path(folder), args.split), args)


if __name__ == "__main__":
    main()
