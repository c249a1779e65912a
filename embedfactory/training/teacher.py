"""A teacher's scores of training rows, for MarginMSE (`margin.py`).

Per row: the teacher's score of (query, positive), then of (query, n) for each hard negative the
trainer uses (`trainer.hard_negatives`, same order). The teacher is either

- a sentence-transformers bi-encoder (hub id, folder, or an `embedded:` name such as
  'embedded:all-mpnet-base-v2'): the score is the cosine of the two embeddings, queries through
  `encode_query` and texts through `encode_document`, i.e. with the teacher's own prompts where it has
  them and bare otherwise (MiniLM and MPNet have none); or
- a cross-encoder (a 'cross-encoder/...' hub id, or a folder saved as a CrossEncoder or whose
  config declares a sequence classifier): the score is `CrossEncoder.predict` on the pair, with the
  model's own activation (a probability or a logit, as its config says).

The query is `query_template` filled with the row's instruction and anchor: '{query}' by default,
the bare anchor, since the teacher was not trained with the student's template.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..models import embedding_model_path
from .data import hard_negatives, query_text


def is_cross_encoder(model_name: str) -> bool:
    """Whether a teacher name is a cross-encoder (see the module docstring)."""
    if model_name.startswith("cross-encoder/"):
        return True
    folder = Path(model_name).expanduser()
    st_config, config = folder / "config_sentence_transformers.json", folder / "config.json"
    if st_config.is_file() and json.loads(st_config.read_text()).get("model_type") == "CrossEncoder":
        return True
    if config.is_file():
        architectures = json.loads(config.read_text()).get("architectures") or []
        return any(a.endswith("ForSequenceClassification") for a in architectures)
    return False


def teacher_scores(rows: list[dict], model_name: str, query_template: str = "{query}", mined: int = 1,
                   batch_size: int = 32, device: str | None = None) -> list[list[float]]:
    """Per row, the teacher's score of its positive then of each of its hard negatives."""
    queries = [query_text(r, query_template) for r in rows]
    docs = [[r["positive"], *hard_negatives(r, mined)] for r in rows]
    if is_cross_encoder(model_name):
        return _cross_scores(queries, docs, model_name, batch_size, device)
    return _cosine_scores(queries, docs, model_name, batch_size, device)


def _cosine_scores(queries: list[str], docs: list[list[str]], model_name: str, batch_size: int,
                   device: str | None) -> list[list[float]]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(embedding_model_path(model_name), device=device)
    kwargs = dict(batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    unique_queries = list(dict.fromkeys(queries))
    unique_docs = list(dict.fromkeys(d for row in docs for d in row))
    q = dict(zip(unique_queries, model.encode_query(unique_queries, **kwargs).astype(np.float64)))
    d = dict(zip(unique_docs, model.encode_document(unique_docs, **kwargs).astype(np.float64)))
    return [[float(q[query] @ d[doc]) for doc in row] for query, row in zip(queries, docs)]


def _cross_scores(queries: list[str], docs: list[list[str]], model_name: str, batch_size: int,
                  device: str | None) -> list[list[float]]:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(model_name, device=device)
    pairs = list(dict.fromkeys((query, doc) for query, row in zip(queries, docs) for doc in row))
    scores = np.asarray(model.predict(pairs, batch_size=batch_size, convert_to_numpy=True,
                                      show_progress_bar=False), dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"cross-encoder {model_name!r} gives {scores.shape[-1]} scores per pair; "
                         "a MarginMSE teacher needs one (a relevance score)")
    where = dict(zip(pairs, scores.tolist()))
    return [[where[(query, doc)] for doc in row] for query, row in zip(queries, docs)]
