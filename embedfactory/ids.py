"""Stable content hashes: row ids, fingerprints, per-row seeds."""
from __future__ import annotations

import hashlib
import json


def stable_hash(*parts, length: int = 16) -> str:
    """Hex digest of JSON-serialisable parts; the same inputs give the same id on every machine."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def seed_of(*parts) -> int:
    """A 31-bit seed derived from parts (fits every server's `seed` field)."""
    return int(stable_hash(*parts, length=8), 16) & 0x7FFFFFFF
