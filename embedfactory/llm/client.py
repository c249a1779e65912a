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
from ..ids import stable_hash
from . import costs, limits, liveness, replylog

# how the reply's JSON is constrained, strictest first; a server that refuses one gets the next
MODES = ("json_schema", "json_object", "none")
# a request the server refuses for what it is (too long for the context, malformed): asking again
# gets the same answer, so it becomes a rejected row with the reason and the shard goes on
REFUSED = {400, 404, 413, 422}
TOO_LONG = ("context length", "maximum context", "context window", "too long", "too many tokens", "exceeds")


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
        self.sampling = self.sampling.resolved()
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
            except openai.BadRequestError as exc:
                if mode == MODES[-1] or any(t in str(exc).lower() for t in TOO_LONG):
                    raise  # not the response format: no other mode would be accepted
                if self.mode == mode:  # the first request to be refused steps down for all
                    self.mode = MODES[MODES.index(mode) + 1]
            except openai.APIConnectionError:
                liveness.check(self.base_url)  # a dead embedded server: say why, do not retry
                raise

    async def _ask(self, api: openai.AsyncOpenAI, request: Request) -> Reply:
        """The reply after at most `max_attempts` attempts (each failed parse is shown to the model);
        taken from the shard's reply log when an earlier try of the shard already paid for it, and
        written there as soon as it is known."""
        log = replylog.current()
        key = log and replylog.ReplyLog.key(self.endpoint.model, request.messages, _schema_id(request.output),
                                            request.seed, self.sampling.model_dump())
        if log and (entry := log.get(key)):
            return _from_log(entry, request)  # charged when it was paid
        reply = await self._attempts(api, request)
        if spend := costs.current():
            spend.charge(self.endpoint.model, reply.prompt_tokens, reply.completion_tokens)
        if log:
            log.put(key, {"raw": reply.raw, "ok": reply.ok, "error": reply.error, "attempts": reply.attempts,
                          "calls": reply.calls, "prompt_tokens": reply.prompt_tokens,
                          "completion_tokens": reply.completion_tokens, "cached_tokens": reply.cached_tokens,
                          "fallback": reply.fallback})
        return reply

    async def _attempts(self, api: openai.AsyncOpenAI, request: Request) -> Reply:
        messages = list(request.messages)
        reply = Reply(value=None, raw="", attempts=0)
        while reply.attempts < self.max_attempts:
            reply.attempts += 1
            try:
                mode, response = await self._create(api, messages, request, request.seed + reply.attempts - 1)
            except openai.APIStatusError as exc:
                if exc.status_code not in REFUSED:
                    raise  # transient (5xx, 429 after the client's retries) or the key: the shard fails
                reply.calls += 1
                reply.value, reply.error = None, f"refused by the server: HTTP {exc.status_code}: {_message(exc)}"
                return reply
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
        done, spend, stopped = 0, costs.current(), []
        async with self._api() as api:
            async def one(request: Request) -> Reply | None:
                nonlocal done
                async with gate:
                    if spend is not None:
                        try:  # a spent budget starts no new request; those in flight finish and are kept
                            spend.check()
                        except costs.BudgetExceeded as exc:
                            stopped.append(exc)
                            return None
                    reply = await self._ask(api, request)
                done += 1
                if progress:
                    progress(done, len(requests))
                return reply

            # requests that share a system message go out one after another, so a server's prefix
            # cache (llama-server's slots, vLLM's) serves that part from memory; replies keep their order
            order = sorted(range(len(requests)), key=lambda i: _system_text(requests[i]))
            started = {i: asyncio.ensure_future(one(requests[i])) for i in order}
            work = asyncio.ensure_future(asyncio.gather(*(started[i] for i in range(len(requests)))))
            watch = asyncio.ensure_future(self._watch())
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                watch.result()  # raises ServerDied
            watch.cancel()
            replies = list(await work)
            if stopped:
                raise stopped[0]
            return replies

    async def _watch(self, every_s: float = 0.2) -> None:
        while True:
            liveness.check(self.base_url)
            await asyncio.sleep(every_s)

    def run_sync(self, requests: list[Request], progress=None) -> list[Reply]:
        return asyncio.run(self.run(requests, progress))


def _system_text(request: Request) -> str:
    first = request.messages[0] if request.messages else {}
    return first.get("content", "") if first.get("role") == "system" else ""


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


@lru_cache(maxsize=256)
def _schema_id(output: type[BaseModel]) -> str:
    return f"{output.__name__}:{stable_hash(output.model_json_schema(), length=12)}"


def _from_log(entry: dict, request: Request) -> Reply:
    value = parse_reply(entry["raw"], request.output)[0] if entry["ok"] else None
    return Reply(value=value, raw=entry["raw"], attempts=entry["attempts"], error=entry["error"],
                 calls=entry["calls"], prompt_tokens=entry["prompt_tokens"],
                 completion_tokens=entry["completion_tokens"], cached_tokens=entry["cached_tokens"],
                 fallback=entry["fallback"])


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    text = (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) else body.get("message")
    return str(text or exc.message)[:300]


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
