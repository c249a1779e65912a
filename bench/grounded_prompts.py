"""Which grounded-query prompt does the generator follow? Gate reject shares per prompt, same passages.

The same sampled passages, attribute draws and seeds are sent with each prompt variant to the same
generator (default: the embedded one); every valid query goes through the grounded gates (`filter/gates.py`:
degenerate, echo, copy, length), each prompt judged against its own fixed text for echoes. Prints per
variant the valid share, each gate's rejects and the share passing every gate, then the change from
the first variant to the last. Replies are kept in `--cache` by prompt text, passages and seed, so a
rerun (or a new variant next to old ones) costs only the new calls.

    python bench/grounded_prompts.py [--beir DIR] [--passages 48] [--variants plain,examples,shipped]

Variants: `shipped` (the package's `grounded_query` prompt: the task and its rules), `plain`
(bench/prompts: the same task and user block without the rules, i.e. the prompt before the prompt
work), `examples` (bench/prompts: the rules followed by two worked examples, the shipped prompt until
2026-12-02, which the 0.5B generator copied), or a path to a Jinja2 file with the same blocks and slots.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedfactory.synth import documents
from embedfactory.eval import sets as evalsets
from embedfactory.filter import gates
from embedfactory import prompts  # noqa: E402
from embedfactory.config import Endpoint, GroundedConfig, SynthParams  # noqa: E402
from embedfactory.ids import stable_hash  # noqa: E402
from embedfactory.llm.client import ChatClient  # noqa: E402
from embedfactory.llm.server import serving  # noqa: E402
from embedfactory.synth import grounded  # noqa: E402

HERE = Path(__file__).resolve().parent


def variant_source(name: str) -> str:
    if name == "shipped":
        return prompts.source(grounded.PROMPT)
    if name in ("plain", "examples"):
        return (HERE / "prompts" / f"grounded_query_{name}.j2").read_text(encoding="utf-8")
    return Path(name).read_text(encoding="utf-8")


def replies_for(args, client_factory, source: str, passages) -> list[str | None]:
    """The generated query per passage (None: no valid reply), from the cache or the generator."""
    key = stable_hash(source, [p.id for p in passages], args.seed, args.model, length=16)
    path = Path(args.cache) / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    template = prompts.compile_source(source)
    _, requests = grounded.query_requests(passages, 1, args.seed, GroundedConfig().instruction, prompt=template)
    out = [r.value.query if r.ok else None for r in client_factory().run_sync(requests)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def judge(source: str, passages, queries: list[str | None], seed: int) -> dict:
    fixed = prompts.fixed_part(prompts.compile_source(source))
    instruction = GroundedConfig().instruction
    reasons = Counter()
    for passage, query in zip(passages, queries):
        if query is None:
            reasons["invalid"] += 1
            continue
        attributes = grounded.draw_attributes(passage.id, 0, seed)
        reason = gates.check_query(query, passage.text, passage.title, gates.Asked(fixed, instruction, attributes))
        reasons[reason.split(":")[0][5:] if reason else "passed"] += 1
    return dict(reasons)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--beir", help="BEIR folder or Cranfield folder (default: Cranfield from ../shared/data)")
    cli.add_argument("--passages", type=int, default=48)
    cli.add_argument("--seed", type=int, default=1, help="passage sample and sampling seed (the quality "
                     "bench samples with seed 0)")
    cli.add_argument("--variants", default="plain,examples,shipped")
    cli.add_argument("--cache", default="./bench-prompts")
    cli.add_argument("--base-url", default="embedded")
    cli.add_argument("--model", default=SynthParams().generator.model)
    args = cli.parse_args()
    corpus = args.beir or str(evalsets.root(evalsets.SHIPPED["cranfield"]))
    docs = documents.sample_documents(documents.load_documents(corpus), args.passages, args.seed)
    passages = documents.passages(docs, GroundedConfig().passage_words)[:args.passages]
    names = args.variants.split(",")
    sources = {name: variant_source(name) for name in names}
    print(f"{len(passages)} passages of {corpus}, seed {args.seed}, generator {args.model} at {args.base_url}")
    endpoint, synth = Endpoint(base_url=args.base_url, model=args.model), SynthParams().synth
    results, served = {}, []
    with contextlib.ExitStack() as stack:
        def client() -> ChatClient:  # the generator starts only when a variant is not cached
            if not served:
                served.append(stack.enter_context(serving(endpoint)))
            return ChatClient(*served[0], synth.sampling, synth.max_attempts)

        for name in names:
            started = time.monotonic()
            queries = replies_for(args, client, sources[name], passages)
            results[name] = reasons = judge(sources[name], passages, queries, args.seed)
            total = len(passages)
            rejected = {g: n for g, n in reasons.items() if g not in ("passed", "invalid")}
            print(f"{name:10} {time.monotonic() - started:6.1f} s  valid {total - reasons.get('invalid', 0)}/{total}  "
                  f"gate rejects {sum(rejected.values())}: "
                  + (", ".join(f"{g} {n}" for g, n in sorted(rejected.items(), key=lambda x: -x[1])) or "none")
                  + f"  passing {reasons.get('passed', 0)}/{total} = {reasons.get('passed', 0) / total:.0%}",
                  flush=True)
    first, last = names[0], names[-1]
    share = {n: results[n].get("passed", 0) / len(passages) for n in (first, last)}
    print(f"passing share {first} {share[first]:.0%} -> {last} {share[last]:.0%} "
          f"({(share[last] - share[first]) * 100:+.0f} points)")


if __name__ == "__main__":
    main()
