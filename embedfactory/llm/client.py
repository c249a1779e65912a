"""One async client for any OpenAI-compatible chat server (OpenAI, vLLM, llama.cpp).

Two kinds of failure, two policies:
- transport (HTTP 5xx, 429, timeouts, refused connections): the openai client retries with backoff
  and honours Retry-After; if the server stays down the error propagates, the shard fails, and the
  orchestrator retries it. Nothing is recorded as a rejected row for a fault that is not the data's.
- content (not JSON, wrong schema, a failed check): the reply is shown back to the model with the
  error, up to ``max_attempts`` times; then the prompt yields a rejected reply with the reason.

Structured output asks for the JSON schema (`json_schema`); a server that refuses it (HTTP 400) is
asked again with `json_object`, then with no response format, and the replies are validated and
repaired as above; requests sent in a fallback mode are counted (`Usage.schema_fallbacks`). A server
this process started and saw die (`liveness`) stops the run at once with the reason.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import openai
from pydantic import BaseModel, ValidationError

from ..config import Endpoint, Sampling
from . import limits, liveness

# how the reply's JSON is constrained, strictest first; a server that refuses one gets the next
MODES = ("json_schema", "json_object", "none")


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
    cached_tokens: int = 0  # prompt tokens the server reused from its prefix cache (where reported)
    fallback: bool = False  # sent with a weaker structured-output mode than the endpoint's

    @property
    def ok(self) -> bool:
        return self.value is not None


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    schema_fallbacks: int = 0

    def add(self, reply: Reply) -> None:
        self.calls += reply.calls
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        self.cached_tokens += reply.cached_tokens
        self.schema_fallbacks += reply.fallback


@dataclass
class ChatClient:
    endpoint: Endpoint
    base_url: str  # resolved: the embedded server's URL when endpoint.base_url == "embedded"
    sampling: Sampling = field(default_factory=Sampling)
    max_attempts: int = 3
    mode: str = ""  # the structured-output mode in use; starts at the endpoint's

    def __post_init__(self) -> None:
        self.mode = self.mode or self.endpoint.structured_output
        self.sampling = self.sampling.for_endpoint(self.endpoint)
        self.limiter = limits.limiter_for(self.endpoint)  # the endpoint's shared limits, if any

    def _api(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=os.environ.get(self.endpoint.api_key_env) or "no-key",
            timeout=self.endpoint.timeout_s,
            max_retries=self.endpoint.transport_retries,
        )

    async def _create(self, api: openai.AsyncOpenAI, messages: list[dict], request: Request, seed: int):
        """One completion; a 400 for the response format steps down to the next mode and asks again."""
        while True:
            mode = self.mode
            extra = {} if mode == "none" else {"response_format": response_format(request.output, mode)}
            if sampling_extra := self.endpoint.sampling_extra():
                extra["extra_body"] = sampling_extra
            try:
                async with self.limiter() if self.limiter else contextlib.nullcontext():
                    return mode, await api.chat.completions.create(
                        model=self.endpoint.model, messages=messages, temperature=self.sampling.temperature,
                        top_p=self.sampling.top_p, max_tokens=self.sampling.max_tokens, seed=seed, **extra)
            except openai.BadRequestError:
                if mode == MODES[-1]:
                    raise
                if self.mode == mode:  # the first request to be refused steps down for all
                    self.mode = MODES[MODES.index(mode) + 1]
            except openai.APIConnectionError:
                liveness.check(self.base_url)  # a dead embedded server: say why, do not retry
                raise

    async def _ask(self, api: openai.AsyncOpenAI, request: Request) -> Reply:
        messages = list(request.messages)
        reply = Reply(value=None, raw="", attempts=0)
        while reply.attempts < self.max_attempts:
            reply.attempts += 1
            mode, response = await self._create(api, messages, request, request.seed + reply.attempts - 1)
            reply.fallback = reply.fallback or mode != self.endpoint.structured_output
            reply.calls += 1
            if usage := response.usage:
                reply.prompt_tokens += usage.prompt_tokens
                reply.completion_tokens += usage.completion_tokens
                details = getattr(usage, "prompt_tokens_details", None)
                reply.cached_tokens += (getattr(details, "cached_tokens", None) or 0) if details else 0
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
        """Send all requests with at most `endpoint.concurrency` in flight; replies in order. If the
        server this process started dies meanwhile, everything in flight stops with ServerDied."""
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

            work = asyncio.ensure_future(asyncio.gather(*(one(r) for r in requests)))
            watch = asyncio.ensure_future(self._watch())
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                watch.result()  # raises ServerDied
            watch.cancel()
            return list(await work)

    async def _watch(self, every_s: float = 0.2) -> None:
        while True:
            liveness.check(self.base_url)
            await asyncio.sleep(every_s)

    def run_sync(self, requests: list[Request], progress=None) -> list[Reply]:
        return asyncio.run(self.run(requests, progress))


@lru_cache(maxsize=None)
def response_format(output: type[BaseModel], mode: str) -> dict:
    """The request's `response_format` for an output model (schemas are built once per model).
    `json_object` carries the schema inline, which llama.cpp enforces and other servers ignore."""
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
    """The server's models, before any request: fails with what to fix when it cannot be reached,
    refuses the key, or does not serve `endpoint.model` (a server without a model list passes)."""
    key = os.environ.get(endpoint.api_key_env)
    client = openai.OpenAI(base_url=base_url, api_key=key or "no-key", timeout=timeout_s, max_retries=1)
    try:
        served = [m.id for m in client.models.list()]
    except openai.AuthenticationError as exc:
        hint = (f"${endpoint.api_key_env} is not set" if not key
                else f"the key in ${endpoint.api_key_env} was refused")
        raise PermissionError(f"model endpoint {base_url} needs an API key: {hint} (generator/revisor/"
                              "brainstormer `api_key_env`, or `api_key_secret` naming a Prefect Secret)") from exc
    except (openai.NotFoundError, openai.PermissionDeniedError):
        return []  # reachable, but it does not list its models: the first request will tell
    except openai.APIError as exc:
        raise ConnectionError(f"model endpoint {base_url} is not reachable: {exc}") from exc
    finally:
        client.close()
    if served and endpoint.model not in served:
        shown = ", ".join(served[:20]) + (f" and {len(served) - 20} more" if len(served) > 20 else "")
        raise ValueError(f"model {endpoint.model!r} is not served by {base_url}; it serves: {shown} "
                         "(set the endpoint's `model`, e.g. --model, to one of them; with vLLM, "
                         "--served-model-name)")
    return served
