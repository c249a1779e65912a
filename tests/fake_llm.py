"""A fake OpenAI-compatible server on loopback, for fault injection only.

It answers chat completions either from a script of canned replies, or by making up a valid reply
for the JSON schema the request names; faults (HTTP 500, 429 with Retry-After, timeouts, truncated
and invalid JSON) are injected at set rates from a seeded generator. It counts what it did, so tests
can check that every paid reply was counted once.
"""
from __future__ import annotations

import itertools
import json
import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler

from loopback import Loopback

FAULTS = ("http_500", "http_429", "timeout", "truncated", "invalid_json")


class FakeChatServer(Loopback):
    def __init__(self, script: list | None = None, fault_rates: dict[str, float] | None = None,
                 seed: int = 0, stall_s: float = 2.0, poison: tuple[str, int] | None = None,
                 latency_s: float = 0.0, refuse_formats: tuple[str, ...] = (), models: tuple[str, ...] = ("fake",),
                 require_key: str | None = None):
        """script items: a string (the reply content), an int (an HTTP status to fail with) or a
        (status, error message) pair.
        Without a script, replies are made up from the request's schema. `poison` = (schema name
        suffix, n): the first n distinct prompts for such a schema always get invalid JSON, so a
        test can count on some prompts exhausting their attempts whatever the random faults do.
        `latency_s`: every reply waits that long, so a test can act while generation is under way.
        `refuse_formats`: response_format types answered with HTTP 400, as a server without them."""
        self.script, self.requests = list(script or []), []
        self.poison, self.poisoned = poison, set()
        self.fault_rates, self.stall_s, self.latency_s = fault_rates or {}, stall_s, latency_s
        self.refuse_formats, self.models, self.require_key = refuse_formats, models, require_key
        self.counts: Counter = Counter()
        self.auth: set[str | None] = set()  # Authorization headers seen
        self.in_flight = self.max_in_flight = 0  # requests being answered now / at most at once
        self.arrivals: list[float] = []  # time.monotonic() of each request's arrival
        self._rng, self._lock, self._ids = random.Random(seed), threading.Lock(), itertools.count()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _refused(self) -> bool:
                if owner.require_key and self.headers.get("Authorization") != f"Bearer {owner.require_key}":
                    self._send(401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
                    return True
                return False

            def do_GET(self):
                if not self._refused():
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in owner.models]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self._refused():
                    return
                owner.auth.add(self.headers.get("Authorization"))
                status, content, finish, headers = owner._answer(body)  # counted on arrival
                time.sleep(owner.latency_s)
                with owner._lock:
                    owner.in_flight -= 1
                if status == "stall":
                    time.sleep(owner.stall_s)  # the client has given up by now
                    status = 504
                if status != 200:
                    return self._send(status, {"error": {"message": content or "injected"}}, headers)
                self._send(200, {
                    "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": finish,
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                              "prompt_tokens_details": {"cached_tokens": 4}}})

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        super().__init__(Handler)

    def _answer(self, body: dict):
        with self._lock:
            self.requests.append(body)
            self.arrivals.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if (body.get("response_format") or {}).get("type") in self.refuse_formats:
                self.counts["refused_format"] += 1
                return 400, None, None, {}
            if self.script:
                item = self.script.pop(0)
                if isinstance(item, int):
                    return item, None, None, {}
                if isinstance(item, tuple):  # (status, error message)
                    return item[0], item[1], None, {}
                self.counts["answered"] += 1
                return 200, item, "stop", {}
            fault = next((f for f in FAULTS if self._rng.random() < self.fault_rates.get(f, 0)), None)
            if fault is None and "http_400" in self.fault_rates and self._rng.random() < self.fault_rates["http_400"]:
                fault = "http_400"  # a refusal for what the request is (drawn apart: other draws stay as they were)
            if self._poisoned(body):
                fault = "invalid_json"
            self.counts[fault or "answered"] += 1
            if fault in ("truncated", "invalid_json") or fault is None:
                self.counts["paid"] += 1  # a completed reply the client receives and must count
            content = json.dumps(fake_value(_schema(body), self._ids))
        if fault == "http_400":
            return 400, "This model's maximum context length is 2048 tokens; the messages use 2411.", None, {}
        if fault == "http_500":
            return 500, None, None, {}
        if fault == "http_429":
            return 429, None, None, {"Retry-After": "0.05"}
        if fault == "timeout":
            return "stall", None, None, {}
        if fault == "truncated":
            return 200, content[: len(content) // 2], "length", {}
        if fault == "invalid_json":
            return 200, content.replace('":', '"', 1), "stop", {}
        return 200, content, "stop", {}

    def _poisoned(self, body: dict) -> bool:
        if not self.poison:
            return False
        suffix, n = self.poison
        name = (body.get("response_format") or {}).get("json_schema", {}).get("name", "")
        prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")  # first ask, not repairs
        if name.endswith(suffix) and (prompt in self.poisoned or len(self.poisoned) < n):
            self.poisoned.add(prompt)
            return True
        return False



def _schema(body: dict) -> dict:
    fmt = body.get("response_format") or {}
    return fmt.get("json_schema", {}).get("schema") or fmt.get("schema") or {}


def fake_value(schema: dict, ids, defs: dict | None = None):
    """A value valid for the (pydantic-made) JSON schema, every string unique."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return fake_value(defs[schema["$ref"].rsplit("/", 1)[1]], ids, defs)
    kind = schema.get("type")
    if kind == "object":
        return {name: fake_value(sub, ids, defs) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [fake_value(schema["items"], ids, defs) for _ in range(schema.get("maxItems", 2))]
    prefix = re.match(r"\^(\w+)\?? ", schema.get("pattern", ""))
    words = " ".join(f"w{next(ids)}" for _ in range(6))
    return f"{prefix.group(1) if prefix else 'text'} {words}"
