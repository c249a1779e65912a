"""The per-request log of a shard: every reply is written to the store as it arrives (in batches of up
to 8 while they come faster than one per 5 s, else one by one), so a shard that fails part way (a server gone, a worker killed) loses none of the replies
it paid for: its rerun takes them from the log instead of asking again, and counts them once.

`pipeline.run_shard` opens the log of the shard it makes (`active(log)`); the client of that thread
reads it through `current()`. A log is keyed by what makes a reply: model, messages, schema, seed
and sampling. It is deleted when the shard commits (the rows keep the replies)."""
from __future__ import annotations

import contextlib
import contextvars
import json
import threading
import time
import uuid

from ..ids import stable_hash
from ..store import Store

FLUSH_EVERY = 8  # replies per object written at most (each flush is one new object: no appends on S3)
FLUSH_SECONDS = 5.0  # a reply is written at once when the last write is this old: a kill loses < 5 s of replies
_current: contextvars.ContextVar[ReplyLog | None] = contextvars.ContextVar("reply_log", default=None)


class ReplyLog:
    def __init__(self, store: Store, folder: str):
        self.store, self.folder = store, folder
        self.lock = threading.Lock()
        self.pending: list[dict] = []
        self.written_at = time.monotonic()
        self.entries: dict[str, dict] = {}
        if store.exists(folder):
            for path in store.list(folder):
                for line in store.read_bytes(path).decode().splitlines():
                    if line.strip():
                        entry = json.loads(line)
                        self.entries[entry["key"]] = entry
        self.reused = 0

    @staticmethod
    def key(model: str, messages: list[dict], schema: str, seed: int, sampling: dict) -> str:
        return stable_hash(model, messages, schema, seed, sampling)

    def get(self, key: str) -> dict | None:
        with self.lock:
            entry = self.entries.get(key)
            self.reused += entry is not None
            return entry

    def put(self, key: str, reply: dict) -> None:
        with self.lock:
            entry = {"key": key, **reply}
            self.entries[key] = entry
            self.pending.append(entry)
            if len(self.pending) >= FLUSH_EVERY or time.monotonic() - self.written_at >= FLUSH_SECONDS:
                self._flush()  # slow replies (a CPU server, a reasoning model) are each written as they come

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            body = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.pending)
            self.store.write_bytes(f"{self.folder}/{uuid.uuid4().hex}.jsonl", body.encode())
            self.pending = []
            self.written_at = time.monotonic()

    def clear(self) -> None:
        """The shard committed: its rows hold the replies now."""
        with self.lock:
            self.pending = []
            for path in self.store.list(self.folder) if self.store.exists(self.folder) else []:
                self.store.delete(path)


@contextlib.contextmanager
def active(log: ReplyLog):
    """Make `log` the current thread's (and its event loops') log; flushed on the way out, even on failure."""
    token = _current.set(log)
    try:
        yield log
    finally:
        _current.reset(token)
        log.flush()


@contextlib.contextmanager
def for_shard(store: Store, folder: str):
    """The log of one shard being made: active inside; cleared only when the body (produce, then
    commit) finished, so a failed try leaves its paid replies for the next."""
    with active(ReplyLog(store, folder)) as log:
        yield log
    log.clear()


def current() -> ReplyLog | None:
    return _current.get()
