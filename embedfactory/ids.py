"""Stable content hashes: row ids, fingerprints, per-row seeds."""
from __future__ import annotations

import hashlib
import inspect
import json
from functools import lru_cache


def stable_hash(*parts, length: int = 16) -> str:
    """Hex digest of JSON-serialisable parts; the same inputs give the same id on every machine."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def seed_of(*parts) -> int:
    """A 31-bit seed derived from parts (fits every server's `seed` field)."""
    return int(stable_hash(*parts, length=8), 16) & 0x7FFFFFFF


@lru_cache(maxsize=None)
def code_version(*modules) -> str:
    """A short hash of the source of `modules` (modules, classes or functions): what a cached result
    made by that code is keyed by, so an edit to the code makes it again (read once per process)."""
    return stable_hash(*(inspect.getsource(m) for m in modules), length=12)
