"""Duplicate removal: exact (normalized text) and near (MinHash LSH on word shingles, as SPEED did
before training), within a run and against datasets already published in the store.

An example's identity text is its anchor and positive together: two rows that ask the same thing
and expect the same answer teach the model nothing new, whatever their negatives.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from datasketch import MinHash, MinHashLSH

from .ids import stable_hash

NUM_PERM = 128


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.casefold())).strip()


def shingles(text: str, size: int = 3) -> set[str]:
    words = normalize(text).split()
    return {" ".join(words[i:i + size]) for i in range(max(1, len(words) - size + 1))}


def minhash(text: str) -> MinHash:
    signature = MinHash(num_perm=NUM_PERM, seed=1)
    signature.update_batch([s.encode() for s in shingles(text)])
    return signature


def identity_text(row: dict) -> str:
    return f"{row['anchor']}\n{row['positive']}"


@dataclass
class Deduper:
    """Remembers texts seen so far; `check` says whether a new one repeats any of them."""

    threshold: float = 0.8

    def __post_init__(self):
        self._exact: dict[str, str] = {}
        self._signatures: dict[str, MinHash] = {}
        self._lsh = MinHashLSH(threshold=self.threshold, num_perm=NUM_PERM)

    def add(self, key: str, text: str) -> None:
        self._exact.setdefault(stable_hash(normalize(text)), key)
        self._signatures[key] = signature = minhash(text)
        self._lsh.insert(key, signature)

    def check(self, text: str) -> str | None:
        """None for new text, else the reason naming the earlier copy."""
        if (earlier := self._exact.get(stable_hash(normalize(text)))) is not None:
            return f"exact duplicate: {earlier}"
        signature = minhash(text)
        # LSH finds candidates; their estimated Jaccard similarity decides
        near = sorted((-self._signatures[k].jaccard(signature), k) for k in self._lsh.query(signature))
        if near and -near[0][0] >= self.threshold:
            return f"near duplicate: {near[0][1]} (jaccard {-near[0][0]:.2f})"
        return None


def find_duplicates(rows: list[dict], earlier: list[tuple[str, dict]], threshold: float) -> list[str | None]:
    """Per row, None to keep it or why it repeats an earlier row or one of `earlier`.

    `earlier` holds (unique label, row) pairs that come first: rows of earlier shards of the run,
    rows of published datasets. Rows are checked in order, so the first copy is the one kept."""
    seen = Deduper(threshold)
    for label, row in earlier:
        seen.add(label, identity_text(row))
    reasons = []
    for row in rows:
        text = identity_text(row)
        reason = seen.check(text)
        if reason is None:
            seen.add(row["example_id"], text)
        reasons.append(reason)
    return reasons
