"""Whether a model server this process started is still alive.

The launcher of the embedded server marks its URL dead the moment the process exits unexpectedly;
the client checks the mark while requests are in flight and stops at once with the reason, instead
of retrying against a server that will never answer. URLs nobody marked (a remote vLLM or OpenAI
endpoint) are never reported dead here: their faults go through the client's transport retries.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
_dead: dict[str, str] = {}


class ServerDied(RuntimeError):
    """The embedded model server exited while the run needed it; retrying cannot help."""


def mark_dead(base_url: str, reason: str) -> None:
    with _lock:
        _dead[base_url] = reason


def clear(base_url: str) -> None:
    with _lock:
        _dead.pop(base_url, None)


def failure(base_url: str) -> str | None:
    """Why the server at `base_url` died, or None while it lives (or is not watched)."""
    with _lock:
        return _dead.get(base_url)


def check(base_url: str) -> None:
    if reason := failure(base_url):
        raise ServerDied(reason)
