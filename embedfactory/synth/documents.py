"""The user's documents for grounded synthesis: read, split into passages, sampled.

A corpus is a JSON-lines or Parquet file of rows with `id` (or BEIR's `_id`), an optional `title`
and `text`; a BEIR folder (its `corpus.jsonl`); a Cranfield (`cran.all.1400`) or CISI (`CISI.ALL`) folder; a
`datasets.save_to_disk` folder; or a Hugging Face dataset id. A malformed line is reported with the
file and line number before any model is called.

A document longer than `max_words` is split into passages of at most that many words, cut at sentence
ends where one falls in the second half of the window. A passage's text is what the retriever sees:
"title text", the form BEIR-style evaluations embed documents in.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..ids import stable_hash


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Passage:
    id: str          # "<doc id>" for a whole document, "<doc id>#<n>" for its n-th passage
    doc_id: str
    title: str
    body: str

    @property
    def text(self) -> str:
        """The passage as the retriever sees it (and the training positive)."""
        return f"{self.title} {self.body}".strip() if self.title else self.body


def _rows_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _rows(source: str) -> list[dict]:
    path = Path(source)
    if path.is_dir() and (path / "corpus.jsonl").is_file():  # BEIR
        return _rows_jsonl(path / "corpus.jsonl")
    if path.is_dir() and any((path / name).is_file() for name in ("cran.all.1400", "CISI.ALL")):
        from ..eval.sets import load_cisi, load_cranfield

        data = (load_cranfield if (path / "cran.all.1400").is_file() else load_cisi)(path)
        return [{"id": i, "title": data.titles.get(i, ""),
                 "text": t[len(data.titles.get(i, "")):].strip()} for i, t in data.corpus.items()]
    if path.suffix in (".jsonl", ".json"):
        return _rows_jsonl(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.exists() and not path.is_dir():
        raise ValueError(f"corpus {source!r}: expected .jsonl, .json or .parquet, a BEIR folder "
                         "(corpus.jsonl), a Cranfield folder, a `datasets` folder or a hub dataset id")
    import datasets

    data = datasets.load_from_disk(source) if path.is_dir() else datasets.load_dataset(source, split="train")
    return data.to_list()


@lru_cache(maxsize=4)
def _load(source: str, version: str | None) -> tuple[Document, ...]:
    docs, seen = [], set()
    for number, row in enumerate(_rows(source), 1):
        doc_id = row.get("id", row.get("_id"))
        text = row.get("text")
        if doc_id is None or not isinstance(text, str):
            raise ValueError(f"corpus {source!r}, row {number}: needs `id` (or `_id`) and a string `text`; "
                             f"has {sorted(row)}")
        doc_id = str(doc_id)
        if doc_id in seen:
            raise ValueError(f"corpus {source!r}, row {number}: id {doc_id!r} repeats an earlier row")
        seen.add(doc_id)
        if text.strip():
            docs.append(Document(doc_id, str(row.get("title") or "").strip(), " ".join(text.split())))
    if not docs:
        raise ValueError(f"corpus {source!r} holds no documents with text")
    return tuple(docs)


def load_documents(source: str) -> list[Document]:
    """The corpus's documents with text, in file order (read once per process and content version)."""
    from .sources import source_version

    return list(_load(source, source_version(source)))


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_passages(doc: Document, max_words: int) -> list[Passage]:
    """The document as one passage, or cut into passages of at most `max_words` words."""
    words = doc.text.split()
    if len(words) <= max_words:
        return [Passage(doc.id, doc.id, doc.title, doc.text)]
    sentences = [s.split() for s in _SENTENCE_END.split(doc.text)]
    pieces, current = [], []
    for sentence in sentences:
        while sentence:
            room = max_words - len(current)
            if len(sentence) <= room:
                current += sentence
                sentence = []
            elif len(current) >= max_words // 2:  # close here, at a sentence end
                pieces.append(current)
                current = []
            else:  # a sentence longer than the room left: cut it
                current += sentence[:room]
                sentence = sentence[room:]
                pieces.append(current)
                current = []
    if current:
        pieces.append(current)
    return [Passage(f"{doc.id}#{n}", doc.id, doc.title, " ".join(p)) for n, p in enumerate(pieces)]


def passages(docs: list[Document], max_words: int) -> list[Passage]:
    return [p for doc in docs for p in split_passages(doc, max_words)]


def sample_documents(docs: list[Document], count: int | None, seed: int) -> list[Document]:
    """`count` documents drawn without replacement (all when None or larger), in a seeded order."""
    order = sorted(docs, key=lambda d: stable_hash("document", seed, d.id))
    return order if count is None else order[:count]


@lru_cache(maxsize=8)
def selected_passages(source: str, documents: int | None, passage_words: int, seed: int,
                      limit: int | None = None) -> tuple[Passage, ...]:
    """The passages a grounded run writes queries for: those of `documents` sampled documents, cut
    to `limit` (the mix's share), in a seeded order."""
    chosen = passages(sample_documents(load_documents(source), documents, seed), passage_words)
    order = sorted(chosen, key=lambda p: stable_hash("passage", seed, p.id))
    return tuple(order if limit is None else order[:limit])
