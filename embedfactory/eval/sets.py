"""Pinned evaluation sets: metadata, checksums, format-faithful loaders and their scores.

An `EvalSet` names the files of one set and the sha256 they must hash to; `verify` checks that
without loading anything else, so a flow can fail before it loads a model. Loaders return plain
data (`RetrievalData`, `StsData`). `retrieval_scores` scores an `Embed` function on a retrieval set:
exact search over the whole corpus (ties in document order), nDCG@10 with graded gains as
pytrec_eval/MTEB compute it, recall@10 as BEIR does (share of each query's relevant documents in its
top 10) and MRR@10, averaged over queries, and each query's nDCG@10 for paired comparisons.
sentence-transformers' `InformationRetrievalEvaluator` is not used here: it counts every judged document
as gain 1 (Cranfield and CISI judge in grades) and gives no per-query scores. STS sets are scored by
sentence-transformers' `EmbeddingSimilarityEvaluator` (`evaluation.sts_scores`).

Cranfield is read in its native format: queries are numbered by position (1..225), as `cranqrel`
numbers them (the `.I` ids of `cran.qry` skip numbers); codes 1 (complete answer) .. 4 (minimum
interest) become gains 4..1, and -1 (a query's source paper) and 5 are dropped.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from ..config import Strict
from ..models import Embed
from .paired import PACKAGE, SHARED_DATA

DATA_DIRS = [PACKAGE / "data" / "evalsets", SHARED_DATA]  # unchanged copies of the sources

Kind = Literal["retrieval", "sts"]
Format = Literal["beir", "cranfield", "cisi", "stsb", "sts-jsonl"]
KIND_OF_FORMAT = {"beir": "retrieval", "cranfield": "retrieval", "cisi": "retrieval", "stsb": "sts",
                  "sts-jsonl": "sts"}
MAIN_SCORE = {"retrieval": "ndcg@10", "sts": "spearman"}


class EvalSet(Strict):
    """One evaluation set: where its files are, how to read them, what they must hash to."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Kind
    format: Format = Field(description="beir: folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv; "
                           "cranfield: folder with cran.all.1400, cran.qry, cranqrel; cisi: folder with CISI.ALL, "
                           "CISI.QRY, CISI.REL; stsb: STS Benchmark "
                           "tab-separated file; sts-jsonl: lines with sentence1, sentence2, score (.gz ok).")
    path: str = Field(description="Folder or file; relative paths resolve against the sets bundled with "
                      "the package (embedfactory/data/evalsets), then the development tree's ../shared/data.")
    source: str = Field(description="Where the files come from (repository and path, or URL).")
    split: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    sha256: str | None = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 over the files the loader reads, in its order "
        "(each file's relative name, then its bytes); null: not pinned.",
    )
    main_score: Literal["ndcg@10", "spearman"]
    max_queries: int | None = Field(None, gt=0, description="Keep the first N query ids (numeric ids "
                                    "in numeric order) or the first N pairs; null: all.")

    @model_validator(mode="after")
    def _consistent(self) -> "EvalSet":
        if KIND_OF_FORMAT[self.format] != self.kind:
            raise ValueError(f"format {self.format!r} holds {KIND_OF_FORMAT[self.format]} data, "
                             f"not {self.kind}")
        if MAIN_SCORE[self.kind] != self.main_score:
            raise ValueError(f"the main score of a {self.kind} set is {MAIN_SCORE[self.kind]}, "
                             f"not {self.main_score}")
        return self


@dataclass
class RetrievalData:
    corpus: dict[str, str]              # doc id -> "title text"
    queries: dict[str, str]             # query id -> text (only queries with judgments)
    qrels: dict[str, dict[str, int]]    # query id -> doc id -> graded relevance > 0
    titles: dict[str, str] = field(default_factory=dict)  # doc id -> title, where the collection has one


@dataclass
class StsData:
    pairs: list[tuple[str, str]]
    scores: list[float]


def root(evalset: EvalSet) -> Path:
    path = Path(evalset.path).expanduser()
    if path.is_absolute():
        return path
    return next((base / path for base in DATA_DIRS if (base / path).exists()), DATA_DIRS[0] / path)


def files(evalset: EvalSet) -> list[tuple[str, Path]]:
    """(relative name, path) of every file the loader reads, in reading order; all must exist."""
    path = root(evalset)
    names = {"beir": ["corpus.jsonl", "queries.jsonl", f"qrels/{evalset.split}.tsv"],
             "cranfield": ["cran.all.1400", "cran.qry", "cranqrel"],
             "cisi": ["CISI.ALL", "CISI.QRY", "CISI.REL"]}.get(evalset.format)
    out = [(name, path / name) for name in names] if names else [(path.name, path)]
    missing = [str(p) for _, p in out if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"evaluation set {evalset.name!r}: missing {', '.join(missing)}")
    return out


def checksum(evalset: EvalSet) -> str:
    digest = hashlib.sha256()
    for name, path in files(evalset):
        digest.update(name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def verify(evalset: EvalSet) -> None:
    """Raise unless the files exist and (when pinned) hash to `evalset.sha256`; reads only them."""
    if evalset.sha256 is None:
        files(evalset)
        return
    actual = checksum(evalset)
    if actual != evalset.sha256:
        raise ValueError(f"evaluation set {evalset.name!r} at {root(evalset)}: expected sha256 "
                         f"{evalset.sha256}, got {actual}")


# --- loaders ---------------------------------------------------------------------------------

PREFLIGHT_LINES = 200  # lines of each file a pre-flight check parses (`check`)


def _lines(path: Path, limit: int | None = None):
    """(line number, line) of a text file (gzip by suffix), the first `limit` non-blank ones."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        seen = 0
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, line
                seen += 1
                if limit is not None and seen >= limit:
                    return


def _jsonl(path: Path, fields: tuple[str, ...], limit: int | None = None, numeric: tuple[str, ...] = ()) -> list[dict]:
    """The objects of a JSON-lines file, each with `fields` (`numeric` ones read as floats); a bad line
    fails naming the file and the line."""
    rows = []
    for number, line in _lines(path, limit):
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc})") from None
        if not isinstance(row, dict) or (missing := [k for k in fields if k not in row]):
            has = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"{path}:{number}: needs the fields {list(fields)}, has {has}")
        rows.append({**row, **{k: _number(path, number, str(row[k])) for k in numeric}})
    return rows


def _tsv(path: Path, columns: int, limit: int | None = None):
    """(line number, fields) of a tab-separated file; a row with fewer than `columns` fields fails."""
    for number, line in _lines(path, limit):
        fields = next(csv.reader([line.rstrip("\r\n")], delimiter="\t", quoting=csv.QUOTE_NONE))
        if len(fields) < columns:
            raise ValueError(f"{path}:{number}: {len(fields)} tab-separated field(s), expected {columns}")
        yield number, fields


def _number(path: Path, number: int, text: str, kind=float):
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{path}:{number}: {text!r} is not a {'number' if kind is float else 'whole number'}") from None


def _judged(corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]],
            titles: dict[str, str] | None = None) -> RetrievalData:
    """Keep the queries that have positive judgments, and only their judgments."""
    qrels = {q: {d: g for d, g in docs.items() if g > 0} for q, docs in qrels.items() if q in queries}
    qrels = {q: docs for q, docs in qrels.items() if docs}
    return RetrievalData(corpus, {q: t for q, t in queries.items() if q in qrels}, qrels,
                         {d: t for d, t in (titles or {}).items() if t})


def load_beir(folder: Path, split: str, limit: int | None = None) -> RetrievalData:
    rows = _jsonl(folder / "corpus.jsonl", ("_id",), limit)
    corpus = {str(d["_id"]): f"{d.get('title') or ''} {d.get('text') or ''}".strip() for d in rows}
    titles = {str(d["_id"]): (d.get("title") or "").strip() for d in rows}
    queries = {str(q["_id"]): q["text"] for q in _jsonl(folder / "queries.jsonl", ("_id", "text"), limit)}
    qrels: dict[str, dict[str, int]] = {}
    path = folder / "qrels" / f"{split}.tsv"
    for number, row in _tsv(path, 3, limit):
        if row[0] != "query-id":
            qrels.setdefault(row[0], {})[row[1]] = _number(path, number, row[2], int)
    return _judged(corpus, queries, qrels, titles)


def _cran_records(path: Path) -> list[dict[str, str]]:
    """`.I` records with their `.T/.A/.B/.W/.X` fields, whitespace collapsed (the SMART test-collection
    layout of Cranfield and CISI). Marker lines after `.W` (stray `.A/.B/.W` inside a few Cranfield
    abstracts) carry no text and keep the abstract going; `.X` (CISI's citations) always ends it."""
    records: list[dict[str, str]] = []
    marker = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if line.startswith(".I"):
                records.append({"I": line[2:].strip()})
                marker = None
            elif line.strip() == ".X":
                marker = "X"
            elif line.strip() in (".T", ".A", ".B", ".W"):
                marker = "W" if marker == "W" else line.strip()[1]
            elif marker is not None:
                records[-1][marker] = records[-1].get(marker, "") + " " + line
            elif line.strip() and not records:
                raise ValueError(f"{path}:{number}: text before the first '.I' record marker")
    return [{k: " ".join(v.split()) for k, v in r.items()} for r in records]


def _smart_collection(folder: Path, names: tuple[str, str, str], queries_of, gain_of, expected: str,
                      limit: int | None = None) -> RetrievalData:
    """A SMART-layout collection: `names` = (documents, queries, judgments) files; each document's title
    and abstract; `queries_of(records)` the query texts by id; each judgment line's gain from
    `gain_of(fields)` (None or 0: not relevant); `expected` names a judgment line's fields."""
    docs_file, queries_file, rels_file = names
    records = _cran_records(folder / docs_file)
    corpus = {r["I"]: f"{r.get('T', '')} {r.get('W', '')}".strip() for r in records}
    queries = queries_of(_cran_records(folder / queries_file))
    qrels: dict[str, dict[str, int]] = {}
    path = folder / rels_file
    for number, line in _lines(path, limit):
        fields = line.split()
        if len(fields) < len(expected.split()):
            raise ValueError(f"{path}:{number}: expected '{expected}', got {line.strip()!r}")
        numbers = [_number(path, number, f, int) for f in fields[:len(expected.split())]]
        query, doc = str(numbers[0]), str(numbers[1])
        if query not in queries:
            raise ValueError(f"{path}:{number}: names query {query}; {queries_file} has {len(queries)}")
        if gain := gain_of(numbers):
            qrels.setdefault(query, {})[doc] = gain
    return _judged(corpus, queries, qrels, {r["I"]: r.get("T", "") for r in records})


def load_cranfield(folder: Path, limit: int | None = None) -> RetrievalData:
    """Cranfield: queries by position in cran.qry; cranqrel codes 1-4 as gains 4-1 (-1, 5: not relevant)."""
    return _smart_collection(folder, ("cran.all.1400", "cran.qry", "cranqrel"),
                             lambda recs: {str(i): r.get("W", "") for i, r in enumerate(recs, start=1)},
                             lambda n: 5 - n[2] if 1 <= n[2] <= 4 else None, "query document code", limit)


def load_cisi(folder: Path, limit: int | None = None) -> RetrievalData:
    """CISI (library science): CISI.ALL's title and abstract per document, CISI.QRY's text per query
    (`.W`, else its `.T`), CISI.REL's `query document 0 0.0` lines as binary relevance."""
    return _smart_collection(folder, ("CISI.ALL", "CISI.QRY", "CISI.REL"),
                             lambda recs: {r["I"]: r.get("W") or r.get("T", "") for r in recs},
                             lambda n: 1, "query document", limit)


def load_stsb(path: Path, limit: int | None = None) -> StsData:
    pairs, scores = [], []
    for number, fields in _tsv(path, 7, limit):
        pairs.append((fields[5].strip(), fields[6].strip()))
        scores.append(_number(path, number, fields[4]))
    return StsData(pairs, scores)


def load_sts_jsonl(path: Path, limit: int | None = None) -> StsData:
    rows = _jsonl(path, ("sentence1", "sentence2", "score"), limit, numeric=("score",))
    return StsData([(r["sentence1"], r["sentence2"]) for r in rows], [r["score"] for r in rows])


def _id_order(qid: str) -> tuple:
    return (0, int(qid), "") if qid.isdigit() else (1, 0, qid)


def check(evalset: EvalSet, verified: bool = False) -> None:
    """Pre-flight: the files exist, match their checksum (unless `verified` already), and their first
    PREFLIGHT_LINES lines parse (a malformed line names its file and line)."""
    if not verified:
        verify(evalset)
    _read(evalset, PREFLIGHT_LINES)


def _read(evalset: EvalSet, limit: int | None = None) -> RetrievalData | StsData:
    path = root(evalset)
    if evalset.format == "beir":
        return load_beir(path, evalset.split, limit)
    if evalset.format == "cranfield":
        return load_cranfield(path, limit)
    if evalset.format == "cisi":
        return load_cisi(path, limit)
    return (load_stsb if evalset.format == "stsb" else load_sts_jsonl)(path, limit)


def load(evalset: EvalSet) -> RetrievalData | StsData:
    """Verify, read, and cap at `max_queries` (first query ids in sorted order, or first pairs)."""
    verify(evalset)
    cap = evalset.max_queries
    data = _read(evalset)
    if isinstance(data, StsData):
        return StsData(data.pairs[:cap], data.scores[:cap]) if cap else data
    if cap:
        keep = sorted(data.queries, key=_id_order)[:cap]
        data = RetrievalData(data.corpus, {q: data.queries[q] for q in keep},
                             {q: data.qrels[q] for q in keep}, data.titles)
    return data


# --- scores ----------------------------------------------------------------------------------

def top_documents(queries: torch.Tensor, docs: torch.Tensor, k: int, query_block: int = 256,
                  doc_block: int = 16384) -> torch.Tensor:
    """(Q, k) indices of the best-scoring documents by dot product, exact, ties in document order;
    the score matrix held at a time is `query_block x doc_block`."""
    k = min(k, docs.shape[0])
    out = []
    for q0 in range(0, queries.shape[0], query_block):
        q = queries[q0:q0 + query_block]
        best_s = q.new_empty((q.shape[0], 0))
        best_i = torch.zeros((q.shape[0], 0), dtype=torch.long, device=q.device)
        for d0 in range(0, docs.shape[0], doc_block):
            block_s, block_i = (q @ docs[d0:d0 + doc_block].T).sort(dim=-1, descending=True, stable=True)
            # earlier documents first, so the stable sort keeps ties in document order
            merged_s = torch.cat([best_s, block_s[:, :k]], dim=-1)
            merged_i = torch.cat([best_i, block_i[:, :k] + d0], dim=-1)
            best_s, order = merged_s.sort(dim=-1, descending=True, stable=True)
            best_s, best_i = best_s[:, :k], merged_i.gather(-1, order[:, :k])
        out.append(best_i)
    return torch.cat(out)


def retrieval_scores(embed: Embed, data: RetrievalData, k: int = 10, embed_queries: Embed | None = None,
                     per_query: bool = False) -> dict:
    """nDCG@k, recall@k and MRR@k of exact search over the whole corpus, averaged over queries.
    `embed` embeds the documents, `embed_queries` (default: `embed`) the queries. `per_query` adds
    each query's nDCG@k (`per_query_ndcg`, query id -> score), for paired comparisons of two models."""
    qids = [q for q in data.queries if data.qrels.get(q)]
    if not qids or not data.corpus:
        raise ValueError("no judged queries or no documents to evaluate")
    doc_ids = list(data.corpus)
    docs = torch.from_numpy(embed([data.corpus[d] for d in doc_ids]))
    queries = torch.from_numpy((embed_queries or embed)([data.queries[q] for q in qids]))
    top = top_documents(queries, docs, k).tolist()
    ndcg = recall = mrr = 0.0
    each = {}
    for qid, ranked in zip(qids, top):
        rels = data.qrels[qid]
        gains = [rels.get(doc_ids[j], 0) for j in ranked]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(rels.values(), reverse=True)[:k]))
        each[qid] = dcg / ideal
        ndcg += dcg / ideal
        recall += sum(g > 0 for g in gains) / len(rels)
        mrr += next((1 / (i + 1) for i, g in enumerate(gains) if g > 0), 0.0)
    n = len(qids)
    out = {f"ndcg@{k}": ndcg / n, f"recall@{k}": recall / n, f"mrr@{k}": mrr / n,
           "queries": n, "documents": len(doc_ids)}
    return {**out, "per_query_ndcg": each} if per_query else out


SHIPPED: dict[str, EvalSet] = {s.name: s for s in [
    EvalSet(name="cranfield", kind="retrieval", format="cranfield", path="cranfield",
            source="github.com/Chetan-Prasad/IR-Lucene_Cran (repo root)", split="test",
            sha256="4679b73f560923e9a6e4efd3c8f392774a550c6b69137dd5a268e6915a8e0090",
            main_score="ndcg@10"),
    EvalSet(name="cisi", kind="retrieval", format="cisi", path="cisi",
            source="CISI test collection (University of Glasgow IR group), as in ../shared/data/cisi",
            split="test", sha256="ef61d4e760db6021ac626c56ba8101b0c36ec8fe2a231d394ed0af6243acf656",
            main_score="ndcg@10"),
    EvalSet(name="stsb-test", kind="sts", format="stsb", path="stsbenchmark/sts-test.csv",
            source="github.com/zhangzhenhu/Semantic-Texual-Similarity-Toolkits: data/stsbenchmark",
            split="test", sha256="80503d57b2fad6be029c940cb04433f51bd52464d47cbacdf8bc20bff369dfc2",
            main_score="spearman"),
]}
