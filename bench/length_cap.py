"""Should the embedded CPU server ask for the recipe's document lengths? Capped vs recipe, same prompts.

E5/SPEED ask retrieval documents of "at least 50..500 words" and long-long texts of "at least 300
words". On the embedded server (Qwen2.5-Coder-0.5B on CPU) the factory caps length asks at
`EMBEDDED_MAX_WORDS` (100) and replies at 768 tokens. This runs the generation stage on the same
tasks, seeds and attribute draws twice: `capped` (the embedded defaults) and `recipe` (no cap, 2048
reply tokens), then the quality gates of the verdict stage on every valid example (the embedding-
based STS gate aside). Prints per condition and task type: valid examples, examples passing every
gate, the length gate's rejects, the median words of the documents asked at least 200 words, and
the seconds per passing example.

    python bench/length_cap.py [--per-type 6] [--types retrieval,long-long]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedfactory.filter import gates
from embedfactory import prompts  # noqa: E402
from embedfactory.config import EMBEDDED_MAX_WORDS, Endpoint, Sampling, SynthConfig  # noqa: E402
from embedfactory.llm.client import ChatClient  # noqa: E402
from embedfactory.llm.server import serving  # noqa: E402
from embedfactory.synth.generate import generate_examples  # noqa: E402
from embedfactory.task_types import TASK_SPECS, lower_bound  # noqa: E402

TASKS = {
    "retrieval": ["Given a question about a household appliance fault, find the repair guide that fixes it.",
                  "Given a symptom a gardener describes, find the article on the plant disease behind it.",
                  "Given a legal question from a tenant, find the passage of housing law that answers it."],
    "long-long": ["Given a clinical trial summary, find the research article that reports its results.",
                  "Given a city council meeting transcript, find the news report that covers the meeting.",
                  "Given a product specification, find the user manual chapter that explains the product."],
    "classification": ["Classify a customer message to a bicycle shop by what the customer wants.",
                       "Classify a movie review by the aspect of the film it criticises most."],
}
CONDITIONS = {"capped": (EMBEDDED_MAX_WORDS, 768), "recipe": (None, 2048)}
LONG = 200  # documents asked at least this many words are the ones the cap changes


def tasks(kind: str, count: int) -> list[dict]:
    texts = TASKS[kind]
    return [{"task_id": f"cap-{kind}-{i}", "persona_id": "bench", "task_type": kind, "task": texts[i % len(texts)]}
            for i in range(count)]


def document_words(row: dict) -> tuple[int, float] | None:
    """(words of the positive document, the lower bound it was asked) for the long asks, else None."""
    asked = json.loads(row["attributes"]).get("num_words")
    if asked is None or lower_bound(asked) < LONG or row["positive"] is None:
        return None
    return len(gates.words(row["positive"])), lower_bound(asked)


def measure(client: ChatClient, rows: list[dict], max_words: int | None) -> dict:
    started = time.perf_counter()
    out = generate_examples(client, rows, 1, 0, max_words, ["English"])
    seconds = time.perf_counter() - started
    valid = [r for r in out.rows if r["status"] == "ok"]
    reasons = []
    for r in valid:
        asked = gates.Asked(prompts.fixed_part(TASK_SPECS[r["task_type"]].generate_prompt), r["task"],
                            json.loads(r["attributes"]))
        reasons.append(gates.check(r["task_type"], json.loads(r["fields"]), asked,
                                   [g for g in gates.GATE_NAMES if g != "sts"]))
    passing = sum(reason is None for reason in reasons)
    long_docs = [w for w in map(document_words, valid) if w]
    return {"prompts": len(rows), "valid": len(valid), "passing": passing,
            "gates": Counter(reason.split(":")[0] for reason in reasons if reason),
            "long_asked": len(long_docs), "long_median_words": statistics.median([w for w, _ in long_docs]) if long_docs else None,
            "long_meeting_ask": sum(w >= lo for w, lo in long_docs),
            "seconds": seconds, "s_per_passing": seconds / passing if passing else None,
            "completion_tokens": out.usage.completion_tokens}


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--per-type", type=int, default=6, help="prompts per task type and condition")
    cli.add_argument("--types", default="retrieval,long-long")
    args = cli.parse_args()
    attempts = SynthConfig().max_attempts
    results = {}
    with serving(Endpoint()) as (endpoint, base_url):
        for kind in args.types.split(","):
            rows = tasks(kind, args.per_type)
            for name, (max_words, max_tokens) in CONDITIONS.items():
                client = ChatClient(endpoint, base_url, Sampling(max_tokens=max_tokens), attempts)
                results[kind, name] = m = measure(client, rows, max_words)
                print(f"{kind:<15} {name:<7} valid {m['valid']}/{m['prompts']}  passing {m['passing']}/{m['prompts']}  "
                      f"gates {dict(m['gates']) or '-'}  long asks {m['long_asked']}: median "
                      f"{m['long_median_words']} words, {m['long_meeting_ask']} at the asked length  "
                      f"{m['seconds']:.0f} s ({m['s_per_passing'] or float('nan'):.1f} s per passing example)",
                      flush=True)
    for name in CONDITIONS:
        passing = sum(results[k, name]["passing"] for k in args.types.split(","))
        seconds = sum(results[k, name]["seconds"] for k in args.types.split(","))
        total = sum(results[k, name]["prompts"] for k in args.types.split(","))
        print(f"{name}: {passing}/{total} passing every gate, {seconds:.0f} s, "
              f"{seconds / passing if passing else float('nan'):.1f} s per passing example")


if __name__ == "__main__":
    main()
