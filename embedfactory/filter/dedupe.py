"""Duplicate removal: exact (normalized text) and near (MinHash LSH on word shingles, as SPEED did
before training), within a run and against published datasets a run is told to avoid.

An example's identity text is its anchor and positive together: two rows that ask the same thing
and expect the same answer teach the model nothing new, whatever their negatives. A text is hashed
once into its signature (`signature`, `exact_key`); an `Index` holds the signatures kept so far, so
checking a row costs the same whatever the index holds (LSH buckets, then the candidates' Jaccard
estimates). synth/duplicates.py keeps the signatures in the store, shard by shard.
"""
from __future__ import annotations

import re

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from ..ids import stable_hash
from ..schemas import Reason

NUM_PERM = 128
SEED = 1
_PERMUTATIONS = MinHash(num_perm=NUM_PERM, seed=SEED)  # drawn once: drawing them costs more than hashing a row


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.casefold())).strip()


def shingles(text: str, size: int = 3) -> set[str]:
    words = normalize(text).split()
    return {" ".join(words[i:i + size]) for i in range(max(1, len(words) - size + 1))}


def signature(text: str) -> np.ndarray:
    """The text's MinHash hash values (uint32, NUM_PERM of them)."""
    hashed = MinHash(num_perm=NUM_PERM, seed=SEED, permutations=_PERMUTATIONS.permutations,
                     scheme=_PERMUTATIONS.scheme)
    hashed.update_batch([s.encode() for s in shingles(text)])
    return hashed.hashvalues


def exact_key(text: str) -> str:
    return stable_hash(normalize(text))


def identity_text(row: dict) -> str:
    return f"{row['anchor']}\n{row['positive']}"


def identity_texts(table) -> list[str]:
    """`identity_text` of every row of an Arrow table or record batch with anchor and positive columns."""
    return [identity_text({"anchor": a, "positive": p})
            for a, p in zip(table["anchor"].to_pylist(), table["positive"].to_pylist())]


class Index:
    """The texts kept so far, as exact keys and MinHash signatures in LSH buckets."""

    def __init__(self, threshold: float = 0.8):
        self.threshold = threshold
        self._exact: dict[str, str] = {}
        self._values: dict[str, np.ndarray] = {}
        self._published: set[str] = set()  # labels of published datasets' rows
        self._lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)

    def __len__(self) -> int:
        return len(self._values)

    def add(self, label: str, exact: str, values: np.ndarray, published: bool = False) -> None:
        """`published`: a row of a published dataset (its duplicates say so), not of this run."""
        if published:
            self._published.add(label)
        self._exact.setdefault(exact, label)
        self._values[label] = values = np.asarray(values, dtype=np.uint32)
        self._lsh.insert(label, self._sketch(values), check_duplication=False)

    def check(self, exact: str, values: np.ndarray) -> Reason | None:
        """None for a new text, else the reason naming the earlier copy."""
        if (earlier := self._exact.get(exact)) is not None:
            return Reason("duplicate", "exact", earlier, earlier in self._published)
        values = np.asarray(values, dtype=np.uint32)
        # LSH finds candidates; their estimated Jaccard similarity (the share of equal hash values) decides
        near = sorted((-float(np.mean(self._values[k] == values)), k) for k in self._lsh.query(self._sketch(values)))
        if near and -near[0][0] >= self.threshold:
            similarity, earlier = -near[0][0], near[0][1]
            return Reason("duplicate", "near", f"{earlier} (jaccard {similarity:.2f})", earlier in self._published)
        return None

    def admit(self, label: str, exact: str, values: np.ndarray) -> Reason | None:
        """Check a text and, when it is new, add it: the first copy is the one kept."""
        if (reason := self.check(exact, values)) is None:
            self.add(label, exact, values)
        return reason

    @staticmethod
    def _sketch(values: np.ndarray) -> LeanMinHash:
        return LeanMinHash(seed=SEED, hashvalues=values, scheme=_PERMUTATIONS.scheme)


def find_duplicates(rows: list[dict], earlier: list[tuple[str, dict]], threshold: float) -> list[Reason | None]:
    """Per row, None to keep it or why it repeats an earlier row or one of `earlier` ((label, row)
    pairs that come first). Rows are checked in order, so the first copy is the one kept."""
    index = Index(threshold)
    for label, row in earlier:
        text = identity_text(row)
        index.add(label, exact_key(text), signature(text))
    reasons = []
    for row in rows:
        text = identity_text(row)
        reasons.append(index.admit(row["example_id"], exact_key(text), signature(text)))
    return reasons
