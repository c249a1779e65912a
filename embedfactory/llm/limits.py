"""Limits on one endpoint shared by every worker that calls it: requests in flight
(`Endpoint.max_concurrent`) and requests started per minute (`Endpoint.requests_per_minute`).

The client knows when a request holds a slot; the orchestrator provides the slots. tasks/limits.py
installs Prefect's global concurrency limits (kept on the Prefect server, so every worker of every
flow run shares them); a test may install its own provider. With no provider installed, or no limit
set, requests are held only by the client's own `concurrency`. A slot is held for one request
including the openai client's own retries of it (and their Retry-After waits)."""
from __future__ import annotations

import re
import socket
from contextlib import AbstractAsyncContextManager
from typing import Callable
from urllib.parse import urlsplit

from ..config import Endpoint

Limiter = Callable[[], AbstractAsyncContextManager]
Provider = Callable[[Endpoint], Limiter]
_provider: Provider | None = None


def use(provider: Provider | None) -> None:
    """Install (or with None remove) the process's limit provider."""
    global _provider
    _provider = provider


def limited(endpoint: Endpoint) -> bool:
    return bool(endpoint.max_concurrent or endpoint.requests_per_minute)


def limiter_for(endpoint: Endpoint) -> Limiter | None:
    if _provider is None or not limited(endpoint):
        return None
    return _provider(endpoint)


LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def limit_name(endpoint: Endpoint) -> str:
    """'llm-gpt-4o-api.openai.com': one name per (model, host), in the characters limits allow. A
    loopback URL is this machine's own server (each GPU worker's vLLM): the machine's name is added,
    so workers do not share one limit by accident."""
    host = urlsplit(endpoint.base_url).hostname or endpoint.base_url
    if host in LOOPBACK:
        host = f"{socket.gethostname()}-{host}"
    return "llm-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{endpoint.model}-{host}").strip("-")
