"""Generation throughput: our example-generation stage vs a plain asyncio loop of direct calls.

Same server, same prompts, same sampling, same concurrency, one process; prints examples per second
for both and their ratio (target >= 0.9). By default it starts the embedded llama.cpp server (CPU,
one request at a time, so concurrency cannot help there); point it at a `vllm serve` URL to measure
what concurrency buys:

    python bench/generation_throughput.py --examples 8
    python bench/generation_throughput.py --base-url http://gpu-1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct \\
        --examples 512 --concurrency 128
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time

import openai

from embedfactory.config import Endpoint, Sampling
from embedfactory.llm.client import ChatClient, parse_reply
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
    client = ChatClient(endpoint, base_url)  # only to build the identical response_format
    gate = asyncio.Semaphore(endpoint.concurrency)

    async def one(request) -> bool:
        async with gate:
            response = await api.chat.completions.create(
                model=endpoint.model, messages=request.messages, temperature=sampling.temperature,
                top_p=sampling.top_p, max_tokens=sampling.max_tokens, seed=request.seed,
                response_format=client._response_format(request.output))
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
    args = cli.parse_args()
    sampling = Sampling(max_tokens=512)
    wanted = Endpoint(base_url=args.base_url, model=args.model, concurrency=args.concurrency)
    rows = tasks(args.examples)
    with contextlib.ExitStack() as stack:
        endpoint, base_url = stack.enter_context(serving(wanted))
        _, requests = example_requests(rows, 1, 0, args.max_words, ["English"])
        asyncio.run(plain_loop(endpoint, base_url, sampling, requests[:2]))  # warm-up, not timed
        started = time.perf_counter()
        out = generate_examples(ChatClient(endpoint, base_url, sampling, max_attempts=1), rows, 1, 0,
                                args.max_words, ["English"])
        ours_s = time.perf_counter() - started
        ours_ok = sum(r["status"] == "ok" for r in out.rows)
        started = time.perf_counter()
        plain_ok = asyncio.run(plain_loop(endpoint, base_url, sampling, requests))
        plain_s = time.perf_counter() - started
    ours, plain = ours_ok / ours_s, plain_ok / plain_s
    print(f"server {base_url} model {endpoint.model} concurrency {endpoint.concurrency} prompts {len(requests)}")
    print(f"ours (generate stage): {ours_ok} valid examples in {ours_s:.1f} s = {ours:.3f} examples/s")
    print(f"plain asyncio loop:    {plain_ok} valid examples in {plain_s:.1f} s = {plain:.3f} examples/s")
    print(f"ratio ours/plain: {ours / plain:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
