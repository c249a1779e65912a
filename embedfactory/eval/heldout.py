"""Held-out evaluation of embedding models: a base model against a fine-tuned one.

Evaluation sets are named (`evalsets.SHIPPED`) or given as EvalSet JSON files, and verified before
any model loads. A model is a name `SentenceTransformer` loads (hub id, local folder, the embedded
MiniLM) or a model folder in the store. Each (model, set) score is kept in the store under
`evals/` and reused, so a base model is scored once per store, not once per training run. A
folder's scores are keyed by the sha256 of its files, so a model retrained into the same folder is
scored again; a hub id or `embedded:` name is keyed by the name.

Retrieval queries are embedded with the model's "query" prompt and documents with its document
prompt (sentence-transformers' `encode_query` / `encode_document`): a model fine-tuned here carries
the query prefix it was trained with; MiniLM and other models without prompts see bare texts. STS
pairs are embedded bare and scored by sentence-transformers' `EmbeddingSimilarityEvaluator` (Spearman
correlation of the pairs' cosines with the gold scores).
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

from ..models import Embed
from ..ids import code_version, stable_hash
from ..models import embedding_model_path
from ..store import Store
from . import sets as evalsets
from .sets import EvalSet, RetrievalData, StsData


def pair_retrieval(embed: Embed, queries: list[str], documents: list[str], relevant: list[int]) -> dict:
    """Scores for query sets with one relevant document each: `relevant[i]` indexes query i's."""
    data = RetrievalData(corpus={str(i): d for i, d in enumerate(documents)},
                         queries={str(i): q for i, q in enumerate(queries)},
                         qrels={str(i): {str(r): 1} for i, r in enumerate(relevant)})
    return evalsets.retrieval_scores(embed, data)


def resolve_eval_sets(names: list[str]) -> list[EvalSet]:
    """Shipped set names or EvalSet JSON paths, each verified (files present, checksum matches)."""
    sets = []
    for name in names:
        if name in evalsets.SHIPPED:
            evalset = evalsets.SHIPPED[name]
        elif Path(name).is_file():
            try:
                evalset = EvalSet.model_validate(json.loads(Path(name).read_text()))
            except ValueError as exc:  # bad JSON or a field the set lacks: name the file
                raise ValueError(f"evaluation set file {name}: {exc}") from None
        else:
            raise ValueError(f"unknown evaluation set {name!r}: not one of {sorted(evalsets.SHIPPED)} "
                             "and not an EvalSet JSON file")
        evalsets.verify(evalset)
        sets.append(evalset)
    return sets


@dataclass(frozen=True)
class Embedders:
    """How a model embeds each kind of text an evaluation set holds."""

    queries: Embed    # retrieval queries: the model's "query" prompt
    documents: Embed  # retrieval documents: its document prompt ("" unless it has one)


def embedders(model, batch_size: int = 64) -> Embedders:
    """A SentenceTransformer's `Embedders`, L2-normalised float32 rows."""
    def wrap(encode) -> Embed:
        def embed(texts: list[str]) -> np.ndarray:
            return encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                          show_progress_bar=False).astype(np.float32)
        return embed
    return Embedders(wrap(model.encode_query), wrap(model.encode_document))


def sts_scores(model, data: StsData, batch_size: int = 64) -> dict:
    """Spearman correlation of the cosines of the pairs' embeddings (bare texts) with the gold scores,
    by sentence-transformers' `EmbeddingSimilarityEvaluator`."""
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    first, second = (list(side) for side in zip(*data.pairs))
    found = EmbeddingSimilarityEvaluator(first, second, list(data.scores), batch_size=batch_size,
                                         main_similarity="cosine", similarity_fn_names=["cosine"],
                                         write_csv=False)(model)
    return {"spearman": float(found["spearman_cosine"]), "pairs": len(data.pairs)}


def evaluate(model, evalset: EvalSet) -> dict:
    """One set's scores for a loaded SentenceTransformer: a retrieval set's queries and documents each
    with the model's prompt (`embedders`), an STS set's pairs bare (`sts_scores`)."""
    data = evalsets.load(evalset)
    if evalset.kind == "retrieval":
        embed = embedders(model)
        metrics = evalsets.retrieval_scores(embed.documents, data, embed_queries=embed.queries)
    else:
        metrics = sts_scores(model, data)
    return {"name": evalset.name, "kind": evalset.kind, "split": evalset.split,
            "main_score": evalset.main_score, "score": metrics[evalset.main_score], "metrics": metrics}


_digests: dict[tuple, str] = {}
_digest_lock = threading.Lock()


def folder_sha256(fs: pafs.FileSystem, root: str) -> str:
    """sha256 over a folder's files in name order (each relative name, size, then bytes); kept per
    process for as long as no file's name, size or mtime changes."""
    infos = sorted((i for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                    if i.type == pafs.FileType.File), key=lambda i: i.path)
    if not infos:
        raise FileNotFoundError(f"model folder {root!r} holds no files")
    stamp = (type(fs).__name__, root, tuple((i.path, i.size, i.mtime_ns) for i in infos))
    with _digest_lock:
        if stamp in _digests:
            return _digests[stamp]
    digest = hashlib.sha256()
    for info in infos:
        digest.update(f"{info.path[len(root):].lstrip('/')}\0{info.size}\0".encode())
        with fs.open_input_stream(info.path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    with _digest_lock:
        _digests[stamp] = digest.hexdigest()
    return _digests[stamp]


def model_identity(store: Store, model: str) -> str:
    """What a model's scores are kept under: `sha256:<digest>` of its files for a model folder in
    the store or a local folder, else the name itself (hub id, `embedded:` name)."""
    if model.startswith(f"{store.root}/"):
        return f"sha256:{folder_sha256(store.fs, model)}"
    if Path(model).expanduser().is_dir():
        return f"sha256:{folder_sha256(pafs.LocalFileSystem(), str(Path(model).expanduser().resolve()))}"
    return model


def score_model(store: Store, model: str, sets: list[EvalSet], log=print) -> list[dict]:
    """Each set's scores for `model`, computed once per store and model content, kept under `evals/`."""
    results, loaded = [], None
    identity = model_identity(store, model)
    for evalset in sets:
        key = stable_hash(identity, evalset.model_dump(), code_version(evalsets, embedders, sts_scores, evaluate), length=16)
        path = store.path("evals", f"{evalset.name}-{key}.json")
        if not store.exists(path):
            if loaded is None:
                loaded = _load(store, model)
            log(f"evaluating {model} on {evalset.name}")
            store.write_json(path, {"model": model, "model_identity": identity, "evalset": evalset.model_dump(),
                                    **evaluate(loaded, evalset)})
        results.append({**store.read_json(path), "model": model})  # same content may have another name
    return results


def compare(base: list[dict], tuned: list[dict]) -> list[dict]:
    """One row per set and metric: base, fine-tuned and their difference (main score first)."""
    rows = []
    for b, t in zip(base, tuned):
        metrics = [b["main_score"], *(m for m in b["metrics"] if m != b["main_score"])]
        for metric in metrics:
            if isinstance(b["metrics"][metric], float):
                rows.append({"set": b["name"], "split": b["split"], "metric": metric,
                             "main": metric == b["main_score"], "base": round(b["metrics"][metric], 4),
                             "fine_tuned": round(t["metrics"][metric], 4),
                             "delta": round(t["metrics"][metric] - b["metrics"][metric], 4)})
    return rows


def _load(store: Store, model: str):
    from sentence_transformers import SentenceTransformer

    if model.startswith(f"{store.root}/"):  # a model folder in the store
        if store.is_local:
            return SentenceTransformer(model)
        local = tempfile.mkdtemp(prefix="embedfactory-model-")
        store.download_dir(model, local)
        return SentenceTransformer(local)
    return SentenceTransformer(embedding_model_path(model))
