"""SPEED's economics measured end to end: teacher calls per example the aligned generator actually wrote.

1. Flow `align` at its defaults (the CPU size: a seed set from 8 personas, half of its prompts held out
   of the junior's SFT for its candidates, 20 steps per model, the embedded Qwen2.5-Coder-0.5B as
   teacher and as base model), with `gguf: f16` so llama.cpp can serve the three models it makes.
2. Flow `synth` as SPEED runs it: the teacher (the shipped 0.5B model) brainstorms personas and tasks,
   the aligned senior writes the examples, the aligned revisor revises them, each served by its own
   llama.cpp server; `--personas N` (one task and one example each); no fine-tuning.
3. Prints the align run's teacher calls per stage, the synth run's calls per stage and model, and the
   teacher calls (align + brainstorm) per example generated, beside SPEED (45K calls / 920K examples)
   and E5-mistral (one call per example): the figure of the run's own quality report.

    python bench/align_economics.py [--store ./bench-align] [--personas 32]

On GPUs pass `--teacher-url/--teacher-model` (e.g. GPT-4o or a `vllm serve` 7B) and a larger seed set
with `--seed-personas`; the teacher's figures only mean something at hundreds of seed examples. A rerun
with the same arguments reuses every shard and model (no model calls), so its figures are free.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline machines: no telemetry errors in the log
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from embedfactory.align.config import AlignParams  # noqa: E402
from embedfactory.config import EMBEDDED, Endpoint, SynthParams  # noqa: E402
from embedfactory.report.summary import format_table  # noqa: E402


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--store", default="./bench-align")
    cli.add_argument("--personas", type=int, default=32, help="personas of the synth run (one example each)")
    cli.add_argument("--seed-personas", type=int, default=None, help="personas of align's seed set "
                     f"(default {AlignParams().seed_set.personas})")
    cli.add_argument("--teacher-url", default=EMBEDDED, help="the teacher's OpenAI-compatible URL "
                     "(default: the embedded default generator on a llama.cpp server of its own)")
    cli.add_argument("--teacher-model", default=Endpoint().model)
    cli.add_argument("--max-words", type=int, default=None, help="cap on length asks (default: the recipe's "
                     "lengths, as every synth run; 100 makes a faster run)")
    cli.add_argument("--max-tokens", type=int, default=None, help="reply cap (default: the synth default)")
    args = cli.parse_args()
    from embedfactory.report import economics
    from embedfactory.llm.server import LlamaServer
    from embedfactory.models import served_gguf
    from embedfactory.synth.pipeline import default_run_id
    from embedfactory.publish.dataset import TooFewRows
    from embedfactory.store import StageDir, Store
    from flows.align import align
    from flows.synth import synth

    started = time.monotonic()
    teacher = Endpoint(base_url=args.teacher_url, model=args.teacher_model)
    seed = {"seed_set": {"personas": args.seed_personas}} if args.seed_personas else {}  # else align's defaults
    aligned = align(AlignParams(store=args.store, teacher=teacher, gguf="f16", **seed))
    print(format_table(aligned["teacher_calls"], ["stage", "teacher_calls", "tokens", "rows", "cost_usd"]))
    print(f"align: {time.monotonic() - started:.0f} s")

    registry = aligned["registry"]
    with contextlib.ExitStack() as servers:
        def served(gguf: Path, name: str) -> Endpoint:
            server = servers.enter_context(LlamaServer(gguf, alias=name, slots=2))
            return Endpoint(base_url=server.base_url, model=name)

        brainstormer = (served(served_gguf(teacher.model), teacher.model) if args.teacher_url == EMBEDDED else teacher)
        params = SynthParams(
            store=args.store, train=None,
            generator=served(Path(registry["aligned-senior"]["gguf"]), "aligned-senior"),
            revisor=served(Path(registry["aligned-revisor"]["gguf"]), "aligned-revisor"),
            brainstormer=brainstormer,
            synth={"personas": args.personas, "tasks_per_persona": 1, "examples_per_task": 1,
                   "max_num_words": args.max_words, "revise": True,  # SPEED's revisor
                   **({"sampling": {"max_tokens": args.max_tokens}} if args.max_tokens else {})})
        run_id = default_run_id(params)  # the servers' URLs are not part of it: a rerun finds its shards
        try:
            result = synth(params)
            print(format_table(result["summary"]))
            published = result["dataset"]["rows"]
        except TooFewRows as refused:  # the generated examples still count
            print(refused)
            published = 0
    store = Store(args.store)
    if published:
        from embedfactory.report.quality import attribute_lines
        attributes = store.read_json(f"{result['dataset']['path']}/quality.json")["attributes"]
        print("\nattributes of the example prompts, drawn share / recipe share:", *attribute_lines(attributes), sep="\n")
    records = {s: StageDir(store, run_id, s).records() for s in ("personas", "tasks", "examples")}
    generated = sum(r.rows for r in records["examples"])
    brainstorm = sum(r.llm_calls for s in ("personas", "tasks") for r in records[s])
    spent = economics.teacher_calls_per_example(store, ["aligned-senior", "aligned-revisor"], generated, brainstorm)
    print(f"\nexamples generated by aligned-senior: {generated}, published {published}")
    print(f"teacher calls: align {spent['align_teacher_calls']} + brainstorm {spent['brainstorm_teacher_calls']} "
          f"= {spent['teacher_calls']}")
    print(f"teacher calls per example: ours {spent['teacher_calls_per_example']} "
          f"SPEED {spent['speed_calls_per_example']} E5-mistral {spent['e5_mistral_calls_per_example']}")
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
