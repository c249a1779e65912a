"""Generation throughput of the embedded engine, measured in one run on the same prompts.

Default (generators): kept rows per minute of each embedded generator, the 0.5B, the 1.5B and the
1.5B with the 0.5B drafting (speculative decoding), on the same prompts: tasks of the default run's
task mix, with its attribute draws, lengths, sampling and repair attempts. A kept row is an example
that passes every quality gate (filter/gates.py, as the verdict stage runs them); kept rows per wall-clock
minute of generation is what decides `make run`'s default generator. Prints each generator's rows,
rejects per gate and per type, then `kept rows/min best/0.5B: X.XXx` naming the best.

    python bench/generation_throughput.py                     # 24 prompts per generator
    python bench/generation_throughput.py --examples 48 --generators 0.5b,1.5b

Engines: our example-generation stage against the embedded `llama-server` at several slot
counts, and against the previous embedded server (`python -m llama_cpp.server`, one request at a
time) where llama-cpp-python is installed (`pip install -e '.[legacy-server]'`). Same prompts (six of
each of the six task types), same sampling and seeds, one attempt per prompt (so the valid share is
the engine's own: examples that pass the output schema and its checks, and in brackets replies
that are a JSON object at all). Prints examples per second, valid share, completion tokens per
second and the share of prompt tokens served from the prefix cache, then `speedup embedded/previous`.

    python bench/generation_throughput.py --mode engines                     # slots 1,2,4,8 + previous
    python bench/generation_throughput.py --mode engines --slots 4 --examples 24

Client mode: our stage vs a plain asyncio loop of direct calls against one server (the client's own
overhead); `--fake-latency 0.5 --examples 512 --concurrency 128` puts a loopback server with fixed
latency behind both, or point `--base-url` at a `vllm serve` URL:

    python bench/generation_throughput.py --mode client --fake-latency 0.5 --examples 512 --concurrency 128
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import openai

from embedfactory.config import EMBEDDED_EMBEDDER, EMBEDDED_SAMPLING, GATE_NAMES, Endpoint, Sampling, SynthConfig
from embedfactory.filter.consistency import encoder
from embedfactory.llm.client import ChatClient, parse_reply, response_format
from embedfactory.llm.server import LegacyLlamaCppServer, LlamaServer, serving
from embedfactory.models import SMALL_LM, embedded_gguf, load_embedder, local_gguf
from embedfactory.synth.brainstorm import assign_task_types
from embedfactory.synth.verdicts import gate_reasons
from embedfactory.synth.generate import example_requests, generate_examples
from embedfactory.task_types import TASK_SPECS

TASKS = {
    "retrieval": "Given a question about a household appliance fault, find the repair guide that fixes it.",
    "classification": "Classify a customer message to a bicycle shop by what the customer wants.",
    "short-short": "Given a dish name, find the cuisine it comes from.",
    "long-long": "Given a clinical trial summary, find the research article that reports its results.",
    "sts": TASK_SPECS["sts"].fixed_task,
    "bitext": TASK_SPECS["bitext"].fixed_task,
}
SAMPLING = Sampling(max_tokens=512)
# generators mode: tasks as a brainstorm writes them, several per type (cycled), a topic for STS
MIX_TASKS = {
    "retrieval": [TASKS["retrieval"],
                  "Given a question about a tax rule for freelancers, retrieve the guidance that answers it.",
                  "Given a symptom described by a dog owner, find veterinary articles that explain its causes."],
    "classification": [TASKS["classification"],
                       "Classify a hotel review by the aspect of the stay it complains about.",
                       "Classify a news headline by the section of the newspaper it belongs to."],
    "short-short": [TASKS["short-short"], "Given a job title, find the department it usually belongs to."],
    "long-long": [TASKS["long-long"], "Given a product manual section, find the troubleshooting article "
                  "that covers the same device."],
    "sts": [TASKS["sts"]], "bitext": [TASKS["bitext"]],
}
STS_TOPICS = ["Home/Cooking", "Science/Astronomy", "Sports/Cycling", "Business/Retail", "Health/Sleep"]
GENERATORS = {  # name -> (model, draft model)
    "0.5b": (SMALL_LM, None),
    "1.5b": ("qwen2.5-coder-1.5b-instruct", None),
    "1.5b+draft": ("qwen2.5-coder-1.5b-instruct", SMALL_LM),
}


def tasks(count: int) -> list[dict]:
    """`count` tasks cycling through the six types, so every type is in every measurement."""
    types = list(TASKS)
    return [{"task_id": f"bench-{i}", "persona_id": "bench", "task_type": types[i % len(types)],
             "task": TASKS[types[i % len(types)]]} for i in range(count)]


def measure(endpoint: Endpoint, base_url: str, rows: list[dict], max_words: int) -> dict:
    """One timed pass of the generate stage (after an untimed warm-up of two prompts)."""
    def run(some: list[dict]):
        client = ChatClient(endpoint, base_url, SAMPLING, max_attempts=1)
        return generate_examples(client, some, 1, 0, max_words, ["English"])

    run([{**r, "task_id": f"warm-{r['task_id']}"} for r in rows[:2]])
    started = time.perf_counter()
    out = run(rows)
    seconds = time.perf_counter() - started
    valid = sum(r["status"] == "ok" for r in out.rows)
    return {"seconds": seconds, "prompts": len(rows), "valid": valid,
            "examples_per_s": valid / seconds, "valid_share": valid / len(rows),
            "json_share": sum(_is_json(r["raw_response"]) for r in out.rows) / len(rows),
            "tokens_per_s": out.usage.completion_tokens / seconds,
            "cached_share": out.usage.cached_tokens / max(out.usage.prompt_tokens, 1)}


def _is_json(raw: str) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def line(name: str, m: dict) -> str:
    return (f"{name:44s} {m['seconds']:6.1f} s  {m['examples_per_s']:.3f} examples/s  valid "
            f"{m['valid']}/{m['prompts']} = {m['valid_share']:.2f} (JSON {m['json_share']:.2f})  "
            f"{m['tokens_per_s']:5.1f} tokens/s  prompt cache {m['cached_share']:.0%}")


def engines(args) -> None:
    rows, model, results = tasks(args.examples), local_gguf(), {}
    print(f"{args.examples} prompts ({', '.join(TASKS)}), max_tokens {SAMPLING.max_tokens}, "
          f"temperature {SAMPLING.temperature}, top_p {SAMPLING.top_p}, {EMBEDDED_SAMPLING}, "
          f"one attempt each, {os.cpu_count()} CPU threads")
    if importlib.util.find_spec("llama_cpp") and not args.no_previous:
        with LegacyLlamaCppServer(model, SMALL_LM) as server:
            endpoint = Endpoint(base_url=server.base_url, model=SMALL_LM, structured_output="json_object", concurrency=1,
                                extra_sampling=EMBEDDED_SAMPLING)
            results["previous"] = measure(endpoint, server.base_url, rows, args.max_words)
            print(line("previous llama_cpp.server", results["previous"]), flush=True)
    else:
        print("previous llama_cpp.server: not installed (pip install -e '.[legacy-server]'), skipped")
    for slots in args.slots:
        with LlamaServer(model, SMALL_LM, slots=slots, ctx_per_slot=args.ctx_per_slot) as server:
            endpoint = Endpoint(base_url=server.base_url, model=SMALL_LM, concurrency=slots,
                                extra_sampling=EMBEDDED_SAMPLING)
            results[slots] = measure(endpoint, server.base_url, rows, args.max_words)
            print(line(f"llama-server {slots} slot{'s' if slots > 1 else ''} ({server.backend})",
                       results[slots]), flush=True)
    best = max(args.slots, key=lambda s: results[s]["examples_per_s"])
    print(f"best slot count: {best}")
    baseline = results.get("previous") or results.get(1)
    if baseline:
        name = "previous" if "previous" in results else "1 slot"
        print(f"speedup embedded/{name}: {results[best]['examples_per_s'] / baseline['examples_per_s']:.2f}x "
              f"examples/s (valid share {results[best]['valid_share']:.2f} vs {baseline['valid_share']:.2f}; "
              f"tokens/s {results[best]['tokens_per_s'] / baseline['tokens_per_s']:.2f}x)")


def mix_tasks(count: int, mix: dict[str, float], seed: int) -> list[dict]:
    """`count` tasks whose types follow `mix` exactly (as a run deals them), their texts cycled."""
    types = [t for persona in assign_task_types(count, 1, mix, seed) for t in persona]
    seen: Counter = Counter()
    out = []
    for i, task_type in enumerate(types):
        texts = MIX_TASKS[task_type]
        task = {"task_id": f"bench-{i}", "persona_id": "bench", "task_type": task_type,
                "task": texts[seen[task_type] % len(texts)]}
        if TASK_SPECS[task_type].fixed_task is not None:
            task["topic"] = STS_TOPICS[seen[task_type] % len(STS_TOPICS)]
        seen[task_type] += 1
        out.append(task)
    return out


def kept_rows(name: str, model: str, draft: str | None, rows: list[dict], synth: SynthConfig, args, embed) -> dict:
    """One timed pass of the generate stage as a run makes it (its sampling, lengths and repair
    attempts), then every quality gate over the rows."""
    with LlamaServer(embedded_gguf(model), model, slots=args.slots[0], ctx_per_slot=args.ctx_per_slot,
                     draft_path=embedded_gguf(draft) if draft else None) as server:
        endpoint = Endpoint(base_url=server.base_url, model=model, concurrency=args.slots[0],
                            extra_sampling=EMBEDDED_SAMPLING)

        def run(some: list[dict]):
            client = ChatClient(endpoint, server.base_url, synth.sampling, synth.max_attempts)
            return generate_examples(client, some, 1, synth.seed, synth.max_num_words, synth.languages)

        run([{**r, "task_id": f"warm-{r['task_id']}"} for r in rows[:2]])
        started = time.perf_counter()
        out = run(rows)
        seconds = time.perf_counter() - started
    valid = [r for r in out.rows if r["status"] == "ok"]
    reasons = gate_reasons(valid, list(GATE_NAMES), embed)
    kept = [r for r, why in zip(valid, reasons) if why is None]
    if args.save:  # every row with its verdict, to read
        with open(Path(args.save) / f"{name}.jsonl", "w") as out_file:
            for row in out.rows:
                why = reasons[valid.index(row)] if row in valid else row["reject_reason"]
                out_file.write(json.dumps({"task_type": row["task_type"], "attributes": json.loads(row["attributes"]),
                                           "fields": row["fields"], "verdict": why or "kept"}) + "\n")
    return {"name": name, "model": model, "draft": draft, "seconds": seconds, "prompts": len(rows),
            "valid": len(valid), "kept": kept, "kept_per_min": len(kept) / seconds * 60,
            "tokens_per_s": out.usage.completion_tokens / seconds,
            "prompt_tokens": out.usage.prompt_tokens, "completion_tokens": out.usage.completion_tokens,
            "cached_share": out.usage.cached_tokens / max(out.usage.prompt_tokens, 1),
            "rejects": Counter(why.split(":")[0] for why in reasons if why)
            + Counter({"invalid reply": len(rows) - len(valid)} if len(rows) > len(valid) else {}),
            "kept_by_type": Counter(r["task_type"] for r in kept),
            "asked_by_type": Counter(r["task_type"] for r in rows)}


def generators(args) -> None:
    synth = SynthConfig()
    if args.max_words is not None:
        synth = synth.model_copy(update={"max_num_words": args.max_words})
    rows = mix_tasks(args.examples, synth.task_mix, synth.seed)
    names = args.generators or list(GENERATORS)
    print(f"{len(rows)} prompts of the default task mix ({dict(Counter(r['task_type'] for r in rows))}), "
          f"lengths {'the recipe' if synth.max_num_words is None else f'capped at {synth.max_num_words} words'}, "
          f"sampling {synth.sampling.resolved().model_dump()} {EMBEDDED_SAMPLING}, {synth.max_attempts} attempts, "
          f"{args.slots[0]} slots, {os.cpu_count()} CPU threads; kept = passes every gate", flush=True)
    embed = encoder(load_embedder(EMBEDDED_EMBEDDER))
    results = {}
    for name in names:
        model, draft = GENERATORS[name]
        m = results[name] = kept_rows(name, model, draft, rows, synth, args, embed)
        rejects = ", ".join(f"{k} {v}" for k, v in m["rejects"].most_common()) or "none"
        by_type = ", ".join(f"{t} {m['kept_by_type'][t]}/{n}" for t, n in m["asked_by_type"].items())
        print(f"{name:12s} {m['seconds']:6.1f} s  kept {len(m['kept'])}/{m['prompts']}  "
              f"{m['kept_per_min']:.2f} kept rows/min  {m['tokens_per_s']:5.1f} tokens/s  tokens prompt "
              f"{m['prompt_tokens']} ({m['cached_share']:.0%} cached) reply {m['completion_tokens']}  "
              f"rejects: {rejects}  kept by type: {by_type}", flush=True)
    for name, m in results.items():
        for row in m["kept"][:args.show]:
            print(f"  {name} kept {row['task_type']}: {row['anchor'][:100]!r} -> {(row['positive'] or '')[:100]!r}")
    best = max(results, key=lambda n: results[n]["kept_per_min"])
    if "0.5b" in results and results["0.5b"]["kept_per_min"] > 0:
        print(f"kept rows/min best/0.5B: {results[best]['kept_per_min'] / results['0.5b']['kept_per_min']:.2f}x "
              f"(best: {best}, {results[best]['kept_per_min']:.2f} vs {results['0.5b']['kept_per_min']:.2f})")
    else:
        print(f"best: {best} ({results[best]['kept_per_min']:.2f} kept rows/min)")
    default = next((n for n, (model, draft) in GENERATORS.items() if model == Endpoint().model and draft is None), None)
    if default in results and results[best]["kept_per_min"] > 0:
        m = results[default]
        print(f"default generator {Endpoint().model} ({default}): {m['kept_per_min'] / results[best]['kept_per_min']:.2f}x "
              f"the best's kept rows/min, {len(m['kept'])}/{m['prompts']} kept (bench/RESULTS.md says why it is the default)")


async def plain_loop(endpoint: Endpoint, base_url: str, requests) -> int:
    """The reference: one direct call per prompt, a semaphore, no retries, no bookkeeping."""
    api = openai.AsyncOpenAI(base_url=base_url, api_key=os.environ.get(endpoint.api_key_env) or "none",
                             timeout=endpoint.timeout_s)
    gate = asyncio.Semaphore(endpoint.concurrency)

    async def one(request) -> bool:
        async with gate:
            response = await api.chat.completions.create(
                model=endpoint.model, messages=request.messages, temperature=SAMPLING.temperature,
                top_p=SAMPLING.top_p, max_tokens=SAMPLING.max_tokens, seed=request.seed,
                response_format=response_format(request.output, endpoint.structured_output))
        choice = response.choices[0]
        return parse_reply(choice.message.content or "", request.output, choice.finish_reason)[0] is not None

    async with api:
        return sum(await asyncio.gather(*(one(r) for r in requests)))


def client_overhead(args) -> None:
    wanted = Endpoint(base_url=args.base_url, model=args.model, concurrency=args.concurrency)
    rows = tasks(args.examples)
    with contextlib.ExitStack() as stack:
        if args.fake_latency is not None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from fake_llm import FakeChatServer

            server = stack.enter_context(FakeChatServer(latency_s=args.fake_latency))
            wanted = wanted.model_copy(update={"base_url": server.base_url})
        endpoint, base_url = stack.enter_context(serving(wanted))
        _, requests = example_requests(rows, 1, 0, args.max_words, ["English"])
        asyncio.run(plain_loop(endpoint, base_url, requests[:2]))  # warm-up, not timed

        def ours() -> int:
            out = generate_examples(ChatClient(endpoint, base_url, SAMPLING, max_attempts=1), rows, 1, 0,
                                    args.max_words, ["English"])
            return sum(r["status"] == "ok" for r in out.rows)

        totals = {"ours": [0, 0.0], "plain": [0, 0.0]}  # valid examples, seconds
        for trial in range(args.trials):
            for name in (("ours", "plain") if trial % 2 == 0 else ("plain", "ours")):
                started = time.perf_counter()
                valid = ours() if name == "ours" else asyncio.run(plain_loop(endpoint, base_url, requests))
                totals[name][0] += valid
                totals[name][1] += time.perf_counter() - started
    prompts_total = len(requests) * args.trials
    print(f"server {base_url} model {endpoint.model} concurrency {endpoint.concurrency} "
          f"prompts {len(requests)} x {args.trials} trials (order alternating)")
    rate = {}
    for name, label in (("ours", "ours (generate stage)"), ("plain", "plain asyncio loop")):
        valid, seconds = totals[name]
        rate[name] = (prompts_total / seconds, valid / seconds)
        print(f"{label:22s} {seconds:7.1f} s  {rate[name][0]:.3f} prompts/s  "
              f"{valid}/{prompts_total} valid = {rate[name][1]:.3f} examples/s")
    print(f"ratio ours/plain: prompts/s {rate['ours'][0] / rate['plain'][0]:.2f}, "
          f"examples/s {rate['ours'][1] / max(rate['plain'][1], 1e-9):.2f} (target >= 0.9)")


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--mode", choices=["generators", "engines", "client"], default="generators")
    cli.add_argument("--examples", type=int, help="prompts per measurement (default: generators 24, "
                     "others 36, types cycling)")
    cli.add_argument("--max-words", type=int, help="cap on length asks (default: generators the run's "
                     "synth.max_num_words, others 50)")
    cli.add_argument("--slots", type=lambda s: [int(x) for x in s.split(",")],
                     help="slot counts of the embedded server (default: engines 1,2,4,8; generators "
                     f"the run's {Endpoint().slots})")
    cli.add_argument("--generators", type=lambda s: s.split(","), help=f"generators mode: which of "
                     f"{', '.join(GENERATORS)} (default all)")
    cli.add_argument("--show", type=int, default=3, help="generators mode: kept rows printed per generator")
    cli.add_argument("--save", help="generators mode: a folder to write each generator's rows and verdicts "
                     "to (<name>.jsonl)")
    cli.add_argument("--ctx-per-slot", type=int, default=Endpoint().ctx_per_slot)
    cli.add_argument("--no-previous", action="store_true", help="engines: skip llama_cpp.server")
    cli.add_argument("--base-url", default="embedded", help="client mode: the server")
    cli.add_argument("--model", default=Endpoint().model)
    cli.add_argument("--concurrency", type=int, default=16)
    cli.add_argument("--trials", type=int, default=2, help="client mode: rounds, order alternating")
    cli.add_argument("--fake-latency", type=float, help="client mode: serve from the loopback test "
                     "server with this many seconds per reply (measures the client's overhead)")
    args = cli.parse_args()
    generating = args.mode == "generators"
    args.examples = args.examples or (24 if generating else 36)
    args.slots = args.slots or ([Endpoint().slots] if generating else [1, 2, 4, 8])
    if not generating:
        args.max_words = 50 if args.max_words is None else args.max_words
    {"generators": generators, "engines": engines, "client": client_overhead}[args.mode](args)


if __name__ == "__main__":
    main()
