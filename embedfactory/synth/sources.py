"""Where personas and topics come from: shipped lists or the user's own files.

Personas (KaLM): the shipped seed list (expanded by the LLM), or a user file (Parquet, JSON lines,
a `datasets.save_to_disk` folder, or a Hugging Face dataset id) with a `persona` column.
Topics (SPEED): category paths, broad to narrow, truncated to `MAX_DEPTH` levels.
Background texts (the filter's, for small runs): shipped sentences, or a user file with `text`.
"""
from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

MAX_DEPTH = 4
SHIPPED = "shipped"


def _shipped(name: str) -> str:
    return resources.files("embedfactory.data").joinpath(name).read_text("utf-8")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def seed_personas() -> list[str]:
    return _lines(_shipped("seed_personas.txt"))


def load_topics(source: str = SHIPPED) -> list[str]:
    """Distinct category paths, each cut to MAX_DEPTH levels."""
    text = _shipped("topics.txt") if source == SHIPPED else Path(source).read_text("utf-8")
    paths = ["/".join(p.strip("/").split("/")[:MAX_DEPTH]) for p in _lines(text)]
    if not paths:
        raise ValueError(f"topic source {source!r} holds no category paths")
    return list(dict.fromkeys(paths))


def load_background(source: str = SHIPPED) -> list[str]:
    """The filter's background texts: the shipped sentences, or a file's `text` column."""
    return _lines(_shipped("background.txt")) if source == SHIPPED else load_column(source, "text")


def load_personas(source: str) -> list[str]:
    """The `persona` column of a user-supplied file or dataset, blanks and repeats removed."""
    return load_column(source, "persona")


def load_column(source: str, column: str) -> list[str]:
    """One text column of a Parquet or JSON-lines file, a `datasets` folder or a hub dataset id."""
    path = Path(source)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif path.suffix in (".jsonl", ".json"):
        rows = json_lines(path)
    else:
        import datasets

        data = datasets.load_from_disk(source) if path.is_dir() else datasets.load_dataset(source, split="train")
        rows = data.to_list()
    if rows and column not in rows[0]:
        raise ValueError(f"source {source!r} has no {column!r} column (columns: {sorted(rows[0])})")
    texts = list(dict.fromkeys(str(r[column]).strip() for r in rows if r.get(column)))
    if not texts:
        raise ValueError(f"source {source!r} holds no {column} texts")
    return texts


def json_lines(path: Path) -> list[dict]:
    """The objects of a JSON-lines file; a bad line fails naming the file and the line."""
    rows = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc})") from None
        if not isinstance(rows[-1], dict):
            raise ValueError(f"{path}:{number}: a line must be a JSON object, not {type(rows[-1]).__name__}")
    return rows


def source_version(source: str | None) -> str | None:
    """What identifies a source's content in fingerprints: a file's checksum, else its name."""
    if source is None or source == SHIPPED or not Path(source).is_file():
        return source
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()
