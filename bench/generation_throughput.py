"""Generation throughput: our example-generation stage vs a plain asyncio loop of direct calls.

Same server, same prompts, same sampling, same concurrency, one process; prints examples per second
for both and their ratio (target >= 0.9). By default it starts the embedded llama.cpp server (CPU,
one request at a time, so concurrency cannot help there); point it at a `vllm serve` URL to measure
what concurrency buys:

    python bench/generation_throughput.py --examples 8
    python bench/generation_throughput.py --fake-latency 0.5 --examples 512 --concurrency 128
    python bench/generation_throughput.py --base-url http://gpu-1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct \\
        --examples 512 --concurrency 128
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import openai

from embedfactory.config import Endpoint, Sampling
from embedfactory.llm.client import ChatClient, parse_reply, response_format
from embedfactory.llm.server import serving
from embedfactory.stages.generate import example_requests, generate_examples

TASKS = [
    ("retrieval", "Given a question about a household appliance fault, find the repair guide that fixes it."),
    ("classification", "Classify a customer message to a bicycle shop by what the customer wants."),
    ("short-short", "Given a dish name, find the cuisine it comes from."),
    ("sts", "Retrieve semantically similar text."),
]


def tasks(count: int) -> list[dict]:
    return [{"task_id": f"bench-{i}", "persona_id": "bench", "task_type": TASKS[i % len(TASKS)][0],
             "task": TASKS[i % len(TASKS)][1]} for i in range(count)]


async def plain_loop(endpoint: Endpoint, base_url: str, sampling: Sampling, requests) -> int:
    """The reference: one direct call per prompt, a semaphore, no retries, no bookkeeping."""
    api = openai.AsyncOpenAI(base_url=base_url, api_key=os.environ.get(endpoint.api_key_env) or "none",
                             timeout=endpoint.timeout_s)
    gate = asyncio.Semaphore(endpoint.concurrency)

    async def one(request) -> bool:
        async with gate:
            response = await api.chat.completions.create(
                model=endpoint.model, messages=request.messages, temperature=sampling.temperature,
                top_p=sampling.top_p, max_tokens=sampling.max_tokens, seed=request.seed,
                response_format=response_format(request.output, endpoint.structured_output))
        choice = response.choices[0]
        return parse_reply(choice.message.content or "", request.output, choice.finish_reason)[0] is not None

    async with api:
        return sum(await asyncio.gather(*(one(r) for r in requests)))


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--base-url", default="embedded")
    cli.add_argument("--model", default=Endpoint().model)
    cli.add_argument("--examples", type=int, default=8)
    cli.add_argument("--concurrency", type=int, default=16)
    cli.add_argument("--max-words", type=int, default=50)
    cli.add_argument("--trials", type=int, default=2, help="rounds; the order of the two alternates")
    cli.add_argument("--fake-latency", type=float, help="serve from the loopback test server with this "
                     "many seconds per reply (a high-concurrency stand-in: measures client overhead)")
    args = cli.parse_args()
    sampling = Sampling(max_tokens=512)
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
        asyncio.run(plain_loop(endpoint, base_url, sampling, requests[:2]))  # warm-up, not timed

        def ours() -> int:
            out = generate_examples(ChatClient(endpoint, base_url, sampling, max_attempts=1), rows, 1, 0,
                                    args.max_words, ["English"])
            return sum(r["status"] == "ok" for r in out.rows)

        def plain() -> int:
            return asyncio.run(plain_loop(endpoint, base_url, sampling, requests))

        totals = {"ours": [0, 0.0], "plain": [0, 0.0]}  # valid examples, seconds
        for trial in range(args.trials):
            for name in (("ours", "plain") if trial % 2 == 0 else ("plain", "ours")):
                started = time.perf_counter()
                valid = ours() if name == "ours" else plain()
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


if __name__ == "__main__":
    main()
