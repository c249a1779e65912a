"""One async client for any OpenAI-compatible chat server (OpenAI, vLLM, llama.cpp).

Two kinds of failure, two policies:
- transport (HTTP 5xx, 429, timeouts, refused connections): the openai client retries with backoff
  and honours Retry-After; if the server stays down the error propagates, the shard fails, and the
  orchestrator retries it. Nothing is recorded as a rejected row for a fault that is not the data's.
- content (not JSON, wrong schema, a failed check): the reply is shown back to the model with the
  error, up to ``max_attempts`` times; then the prompt yields a rejected reply with the reason.
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import openai
from pydantic import BaseModel, ValidationError

from ..config import Endpoint, Sampling


@dataclass
class Request:
    """One prompt to send: chat messages, the pydantic model its reply must satisfy, a seed."""

    messages: list[dict]
    output: type[BaseModel]
    seed: int


@dataclass
class Reply:
    """The outcome of one request after all attempts; `value` is None when rejected."""

    value: BaseModel | None
    raw: str
    attempts: int
    error: str | None = None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.value is not None


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, reply: Reply) -> None:
        self.calls += reply.calls
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens


@dataclass
class ChatClient:
    endpoint: Endpoint
    base_url: str  # resolved: the embedded server's URL when endpoint.base_url == "embedded"
    sampling: Sampling = field(default_factory=Sampling)
    max_attempts: int = 3

    def _api(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=os.environ.get(self.endpoint.api_key_env) or "no-key",
            timeout=self.endpoint.timeout_s,
            max_retries=self.endpoint.transport_retries,
        )

    async def _ask(self, api: openai.AsyncOpenAI, request: Request) -> Reply:
        messages = list(request.messages)
        reply = Reply(value=None, raw="", attempts=0)
        while reply.attempts < self.max_attempts:
            reply.attempts += 1
            response = await api.chat.completions.create(
                model=self.endpoint.model,
                messages=messages,
                temperature=self.sampling.temperature,
                top_p=self.sampling.top_p,
                max_tokens=self.sampling.max_tokens,
                seed=request.seed + reply.attempts - 1,
                response_format=response_format(request.output, self.endpoint.structured_output),
            )
            reply.calls += 1
            if response.usage:
                reply.prompt_tokens += response.usage.prompt_tokens
                reply.completion_tokens += response.usage.completion_tokens
            choice = response.choices[0]
            reply.raw = choice.message.content or ""
            reply.value, reply.error = parse_reply(reply.raw, request.output, choice.finish_reason)
            if reply.ok:
                return reply
            messages = [*request.messages, {"role": "assistant", "content": reply.raw},
                        {"role": "user", "content": repair_message(reply.error)}]
        return reply

    async def run(self, requests: list[Request],
                  progress: Callable[[int, int], None] | None = None) -> list[Reply]:
        """Send all requests with at most `endpoint.concurrency` in flight; replies in order."""
        gate = asyncio.Semaphore(self.endpoint.concurrency)
        done = 0
        async with self._api() as api:
            async def one(request: Request) -> Reply:
                nonlocal done
                async with gate:
                    reply = await self._ask(api, request)
                done += 1
                if progress:
                    progress(done, len(requests))
                return reply

            return list(await asyncio.gather(*(one(r) for r in requests)))

    def run_sync(self, requests: list[Request], progress=None) -> list[Reply]:
        return asyncio.run(self.run(requests, progress))


@lru_cache(maxsize=None)
def response_format(output: type[BaseModel], mode: str) -> dict:
    """The request's `response_format` for an output model (schemas are built once per model)."""
    schema = output.model_json_schema()
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": output.__name__, "schema": schema}}


def parse_reply(raw: str, output: type[BaseModel],
                finish_reason: str | None = None) -> tuple[BaseModel | None, str | None]:
    """(value, None) when `raw` is a valid `output`, else (None, a short reason)."""
    if finish_reason == "length":
        return None, "truncated: reply hit max_tokens"
    try:
        json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} at char {exc.pos}"
    try:
        return output.model_validate_json(raw), None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "reply"
        return None, f"schema: {where}: {first['msg']}"


def repair_message(error: str) -> str:
    return (f"Your reply could not be used ({error}). Answer again with one JSON object that "
            "follows the schema exactly, and nothing else.")


def check_reachable(base_url: str, endpoint: Endpoint, timeout_s: float = 10.0) -> list[str]:
    """List the server's models, failing with a clear message when it cannot be reached."""
    client = openai.OpenAI(base_url=base_url, api_key=os.environ.get(endpoint.api_key_env) or "no-key",
                           timeout=timeout_s, max_retries=1)
    try:
        return [m.id for m in client.models.list()]
    except openai.APIError as exc:
        raise ConnectionError(f"model endpoint {base_url} is not reachable: {exc}") from exc
    finally:
        client.close()

