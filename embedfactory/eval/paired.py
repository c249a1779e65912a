"""Loaders for real paired data used to measure the filter and the miner (format-faithful, read-only).

STS Benchmark files are tab-separated: genre, file, year, id, score, sentence 1, sentence 2 (a few
lines carry extra source columns after those seven, which are ignored).
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # embedfactory/
SHARED_DATA = PACKAGE.parents[1] / "shared" / "data"
BUNDLED_STS_TEST = PACKAGE / "data" / "evalsets" / "stsbenchmark" / "sts-test.csv"


def sts_pairs(path: str | Path | None = None, min_score: float = 4.0) -> list[dict]:
    """(anchor, positive) rows from sentence pairs scored at least `min_score` of 5. Default: the
    train split from `../shared/data`, else the test split shipped with the package."""
    shared_train = SHARED_DATA / "stsbenchmark" / "sts-train.csv"
    path = path or (shared_train if shared_train.exists() else BUNDLED_STS_TEST)
    rows, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for fields in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            score, s1, s2 = float(fields[4]), fields[5].strip(), fields[6].strip()
            if score >= min_score and s1 != s2 and (s1, s2) not in seen:
                seen.add((s1, s2))
                rows.append({"example_id": f"sts-{fields[3]}-{len(rows)}", "anchor": s1, "positive": s2,
                             "negative": None})
    return rows


def corrupt_positives(rows: list[dict], fraction: float, seed: int = 0) -> tuple[list[dict], set[str]]:
    """Replace `fraction` of the positives with another row's positive; returns rows and the ids hit."""
    rng = random.Random(seed)
    hit = set(rng.sample([r["example_id"] for r in rows], round(fraction * len(rows))))
    pool = [r["positive"] for r in rows]
    out = []
    for row in rows:
        if row["example_id"] in hit:
            row = {**row, "positive": rng.choice([p for p in pool if p != row["positive"]])}
        out.append(row)
    return out, hit
