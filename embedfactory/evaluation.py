"""Held-out evaluation of embedding models: a base model against a fine-tuned one.

Evaluation sets are named (`evalsets.SHIPPED`) or given as EvalSet JSON files, and verified before
any model loads. A model is a name `SentenceTransformer` loads (hub id, local folder, the embedded
MiniLM) or a model folder in the store. Each (model, set) score is kept in the store under
`evals/` and reused, so a base model is scored once per store, not once per training run.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from . import evalsets
from .evalsets import EvalSet, RetrievalData
from .filtering import Embed, encoder
from .ids import stable_hash
from .models import embedding_model_path
from .pipeline import code_version
from .store import Store


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
            evalset = EvalSet.model_validate(json.loads(Path(name).read_text()))
        else:
            raise ValueError(f"unknown evaluation set {name!r}: not one of {sorted(evalsets.SHIPPED)} "
                             "and not an EvalSet JSON file")
        evalsets.verify(evalset)
        sets.append(evalset)
    return sets


def score_model(store: Store, model: str, sets: list[EvalSet], log=print) -> list[dict]:
    """Each set's scores for `model`, computed once per store and kept under `evals/`."""
    results, embed = [], None
    for evalset in sets:
        key = stable_hash(model, evalset.model_dump(), code_version(evalsets), length=16)
        path = store.path("evals", f"{evalset.name}-{key}.json")
        if not store.exists(path):
            if embed is None:
                embed = encoder(_load(store, model))
            log(f"evaluating {model} on {evalset.name}")
            store.write_json(path, {"model": model, "evalset": evalset.model_dump(),
                                    **evalsets.evaluate(embed, evalset)})
        results.append(store.read_json(path))
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
