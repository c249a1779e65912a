"""Generation throughput of the embedded engine, measured in one run on the same prompts.

Default (engines): our example-generation stage against the embedded `llama-server` at several slot
counts, and against the previous embedded server (`python -m llama_cpp.server`, one request at a
time) where llama-cpp-python is installed (`pip install -e '.[legacy-server]'`). Same prompts (six of
each of the six task types), same sampling and seeds, one attempt per prompt (so the valid share is
the engine's own: examples that pass the output schema and its checks, and in brackets replies
that are a JSON object at all). Prints examples per second, valid share, completion tokens per
second and the share of prompt tokens served from the prefix cache, then `speedup embedded/previous`.

    python bench/generation_throughput.py                     # slots 1,2,4,8 + previous
    python bench/generation_throughput.py --slots 4 --examples 24

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
from pathlib import Path

import openai

from embedfactory.config import EMBEDDED_SAMPLING, Endpoint, Sampling
from embedfactory.llm.client import ChatClient, parse_reply, response_format
from embedfactory.llm.server import LegacyLlamaCppServer, LlamaServer, serving
from embedfactory.models import local_gguf
from embedfactory.stages.generate import example_requests, generate_examples
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
        with LegacyLlamaCppServer(model, Endpoint().model) as server:
            endpoint = Endpoint(base_url=server.base_url, structured_output="json_object", concurrency=1,
                                extra_sampling=EMBEDDED_SAMPLING)
            results["previous"] = measure(endpoint, server.base_url, rows, args.max_words)
            print(line("previous llama_cpp.server", results["previous"]), flush=True)
    else:
        print("previous llama_cpp.server: not installed (pip install -e '.[legacy-server]'), skipped")
    for slots in args.slots:
        with LlamaServer(model, Endpoint().model, slots=slots, ctx_per_slot=args.ctx_per_slot) as server:
            endpoint = Endpoint(base_url=server.base_url, concurrency=slots, extra_sampling=EMBEDDED_SAMPLING)
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
    cli.add_argument("--mode", choices=["engines", "client"], default="engines")
    cli.add_argument("--examples", type=int, default=36, help="prompts per measurement (types cycle)")
    cli.add_argument("--max-words", type=int, default=50)
    cli.add_argument("--slots", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8],
                     help="engines: slot counts of the embedded server to measure")
    cli.add_argument("--ctx-per-slot", type=int, default=Endpoint().ctx_per_slot)
    cli.add_argument("--no-previous", action="store_true", help="engines: skip llama_cpp.server")
    cli.add_argument("--base-url", default="embedded", help="client mode: the server")
    cli.add_argument("--model", default=Endpoint().model)
    cli.add_argument("--concurrency", type=int, default=16)
    cli.add_argument("--trials", type=int, default=2, help="client mode: rounds, order alternating")
    cli.add_argument("--fake-latency", type=float, help="client mode: serve from the loopback test "
                     "server with this many seconds per reply (measures the client's overhead)")
    args = cli.parse_args()
    (engines if args.mode == "engines" else client_overhead)(args)


if __name__ == "__main__":
    main()
