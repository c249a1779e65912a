"""The consistency filter's stages: corpus (embed each shard's documents once) and verdicts (gates,
the duplicates stage's reasons, each task type's round trip against its pool, revisor acceptance,
mined negatives).

Each gets the engine's `pipeline.ShardJob`; the stage definitions (config slices, versions) live in
pipeline.py, which calls `corpus_shard` and `verdict_shard`.
"""
from __future__ import annotations

import contextlib
import json
import threading
import warnings

import torch

from .. import prompts
from ..config import FilterConfig, SynthParams
from ..filter import consistency, gates, search
from ..models import load_embedder
from ..schemas import Reason, count_reasons
from ..task_types import TASK_SPECS
from . import documents, duplicates, grounded, sources
from .common import ShardOutput

EXTERNAL = "external"  # the corpus shard of `filter.external_corpus`
DOCUMENTS = "documents"  # the corpus shard of the grounded corpus (every passage, sampled or not)
BACKGROUND = "background"  # the corpus shard of `filter.background_corpus` (its first `min_corpus` texts)


def corpus_keys(params: SynthParams) -> list[str]:
    """The corpus shards beside those of the brainstormed example shards."""
    f = params.filter
    return ([EXTERNAL] if f.external_corpus else []) + ([DOCUMENTS] if params.grounded.corpus else []) + (
        [BACKGROUND] if f.background_corpus and f.min_corpus else [])


def filter_encoder(cfg: FilterConfig, role: str | None = None) -> consistency.Embed:
    """The filter model (loaded once per process) on its device, as an embedding function: anchors with
    its query prompt (role 'query'), documents with its document prompt ('document'), where it has them
    (EmbeddingGemma; MiniLM embeds both bare); no role: bare (the STS gate compares three texts alike)."""
    return encoder(cfg.model, cfg.device, cfg.batch_size, role)


def encoder(model: str, device: str, batch_size: int, role: str | None = None) -> consistency.Embed:
    return consistency.encoder(load_embedder(model, search.resolve_device(device)), batch_size, role)


def corpus_shard(job) -> ShardOutput:
    """Embed the shard's documents once; every verdict shard searches all corpus shards."""
    cfg, rows = job.cfg, job.rows
    if job.key == EXTERNAL:
        pairs = [(t, consistency.EVERY) for t in sources.load_column(cfg["external"].path, "text")]
    elif job.key == DOCUMENTS:
        pairs = [(p.text, grounded.TASK_TYPE) for p in documents.passages(
            documents.load_documents(cfg["documents"].path), cfg["passage_words"])]
    elif job.key == BACKGROUND:
        pairs = [(t, consistency.BACKGROUND)
                 for t in sources.load_background(cfg["background"].path)[:cfg["min_corpus"]]]
    else:
        pairs = consistency.grouped_corpus_of(rows)
    embed = encoder(cfg["model"], job.runtime["device"], job.runtime["batch_size"], "document")
    vectors = embed([t for t, _ in pairs]) if pairs else []
    if job.progress is not None:
        job.progress(len(rows), len(rows))
    return ShardOutput(rows=[{"text": t, "group": g, "embedding": v.tolist()} for (t, g), v in zip(pairs, vectors)],
                       rows_in=len(rows))


_corpus_cache: dict[tuple, tuple[list[str], torch.Tensor, list[frozenset]]] = {}  # the last corpus read
_corpus_lock = threading.Lock()


def _corpus_matrix(job, device: str) -> tuple[list[str], torch.Tensor, list[frozenset]]:
    """The run's corpus (each text once), its embeddings on `device` and each text's groups, read
    from the store once per process: verdict shards running side by side in one worker share one copy."""
    shards = [s for s in job.side if s.stage == "corpus"]
    key = (job.store.uri, job.run_id, tuple(sorted(s.sha256 for s in shards)), device)
    with _corpus_lock:
        if key not in _corpus_cache:
            _corpus_cache.clear()
            table = job.stage_dir("corpus").read([s.key for s in shards])
            first: dict[str, int] = {}
            groups: dict[str, set] = {}
            for i, (text, group) in enumerate(zip(table["text"].to_pylist(), table["group"].to_pylist())):
                first.setdefault(text, i)  # a text in several shards (or groups) counts once
                groups.setdefault(text, set()).add(group)
            texts = list(first)
            flat = table["embedding"].combine_chunks().flatten().to_numpy()
            with warnings.catch_warnings():  # Arrow's buffer is read-only; the search never writes to it
                warnings.simplefilter("ignore", UserWarning)
                matrix = torch.from_numpy(flat.reshape(len(table), -1) if len(table) else flat.reshape(0, 0))
            if len(texts) < len(table):
                matrix = matrix[list(first.values())]
            _corpus_cache[key] = texts, matrix.to(device), [frozenset(groups[t]) for t in texts]
        return _corpus_cache[key]


def gate_reasons(rows: list[dict], names: list[str], embed: consistency.Embed) -> list[Reason | None]:
    """Each row's first failing quality gate (filter/gates.py; reads 'gate <name>: ...'), or None."""
    out = []
    for row in rows:
        attributes = json.loads(row["attributes"])
        if row["prompt_name"] == grounded.PROMPT:
            asked = gates.Asked(prompts.fixed_part(grounded.PROMPT), row["task"], attributes)
            out.append(gates.check_query(row["anchor"], row["positive"], attributes.get("title"), asked, names))
        else:
            spec = TASK_SPECS[row["task_type"]]
            asked = gates.Asked(prompts.fixed_part(spec.generate_prompt), row["task"], attributes)
            out.append(gates.check(row["task_type"], json.loads(row["fields"]), asked, names))
    triples = [i for i, r in enumerate(rows) if r["task_type"] == "sts" and out[i] is None]
    if "sts" in names and triples:
        s1, s2, s3 = (embed([rows[i][c] for i in triples]) for c in ("anchor", "positive", "negative"))
        for i, reason in zip(triples, gates.sts_order(s1, s2, s3)):
            out[i] = reason
    return out


def _originals(rows: list[dict], picked: list[int]) -> dict[int, tuple]:
    """Row index -> the original (anchor, positive, negative) of each revised row among `picked`."""
    out = {}
    for i in picked:
        if rows[i]["revision_status"] == "revised":
            spec = TASK_SPECS[rows[i]["task_type"]]
            with contextlib.suppress(ValueError):  # an original that is no example cannot come back
                out[i] = spec.columns(spec.output.model_validate_json(rows[i]["original_fields"]))
    return out


def verdict_shard(job) -> ShardOutput:
    cfg, rows, progress = job.cfg["filter"], job.rows, job.progress
    embed_queries, embed_docs = filter_encoder(cfg, "query"), filter_encoder(cfg, "document")
    device = search.resolve_device(cfg.device)
    texts, docs, groups = _corpus_matrix(job, device)
    queries = torch.from_numpy(embed_queries([r["anchor"] for r in rows])).to(device)
    mining = consistency.Mining(cfg.mined_negatives, *cfg.mine_range, cfg.mine_relative_margin,
                                cfg.mine_absolute_margin, cfg.mine_sampling) if cfg.mined_negatives else None
    verdicts: list[dict | None] = [None] * len(rows)
    reverted = 0
    for task_type in dict.fromkeys(r["task_type"] for r in rows):  # each type searches its own pool
        mine = [i for i, r in enumerate(rows) if r["task_type"] == task_type]
        where = consistency.pool(groups, task_type, cfg.min_corpus if cfg.background_corpus else 0)
        pool_docs = docs if len(where) == len(texts) else docs[torch.tensor(where, device=docs.device)]
        pool_texts = [texts[j] for j in where]
        found = consistency.verdicts([rows[i] for i in mine], queries[mine], pool_texts, pool_docs, cfg.topk, mining)
        for i, verdict in zip(mine, found):
            verdicts[i] = verdict
        if originals := _originals(rows, mine):  # a revision must not lower its positive's rank
            anchors, positives = (torch.from_numpy(embed([o[c] for o in originals.values()])).to(device)
                                  for embed, c in ((embed_queries, 0), (embed_docs, 1)))
            reverted += consistency.keep_better_originals(rows, verdicts, originals, anchors, positives,
                                                          pool_texts, pool_docs, cfg.topk)
        if progress is not None:  # a task type's rows are searched and mined
            progress(sum(v is not None for v in verdicts), len(rows))
    gated = gate_reasons(rows, cfg.gates, filter_encoder(cfg))  # on the texts that stand, original or revision
    found = duplicates.reasons(job.store, job.run_id, job.side)
    repeats = [found.get(r["example_id"]) for r in rows]
    out = []
    for row, verdict, duplicate, gate in zip(rows, verdicts, repeats, gated):
        if gate or duplicate:  # a gate's reason first: it says what is wrong with the row itself
            verdict = {**verdict, "kept": False, "drop_reason": gate or duplicate}
        reason = verdict["drop_reason"]
        out.append({**row, **verdict, "drop_kind": reason and reason.kind, "drop_name": reason and reason.name})
    found = [d for d in repeats if d]
    extra = {"duplicates_exact": sum(d.name == "exact" for d in found),
             "duplicates_near": sum(d.name == "near" for d in found),
             "duplicates_of_published": sum(d.published for d in found),
             "revisions_reverted_by_rank": reverted,
             "reasons": count_reasons(r["drop_reason"] for r in out)}
    return ShardOutput(rows=out, rows_in=len(rows), dropped=sum(not r["kept"] for r in out), extra=extra)
