"""The duplicates stage: the run's example shards in order, each row checked against one MinHash LSH
index (dedupe.Index) of the datasets the run was told to avoid (`filter.dedupe_against`) and of the
rows before it, then added to it. The verdict shards read each row's reason from here.

The index lives in the store, so no text is hashed twice: each shard's signatures are committed as
its shard of this stage (`runs/<run>/duplicates/part-<key>.parquet`), each published dataset's once
under `index/minhash/<dataset sha256>.parquet`. One task walks the shards and reads the index once;
a committed shard (same fingerprint) only adds its signatures back. So the stage's cost is linear in
the rows, where checking every shard against a re-hash of all earlier ones grew with their square.
A shard's fingerprint chains the one before it: a changed shard redoes itself and those after it.
"""
from __future__ import annotations

import inspect
import sys
import time
from collections import Counter
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from .. import dedupe, publish
from ..config import SynthParams
from ..ids import stable_hash
from ..schemas import SIGNATURES
from ..store import ShardRecord, StageDir, Store

STAGE = "duplicates"
BATCH_ROWS = 4096


def datasets_against(params: SynthParams, run_id: str) -> list[dict]:
    """The cards of the published datasets `params.filter.dedupe_against` names (the run's own left out)."""
    store, cards = Store(params.store), {}
    for ref in params.filter.dedupe_against:
        name, _, version = ref.partition("/")
        if version:
            found = [store.read_json(f"{publish.dataset_dir(store, name, version)}/card.json")]
        else:
            found = [c for c in publish.published_cards(store) if c["name"] == name]
        cards.update({(c["name"], c["version"]): c for c in found if c["version"] != run_id})
    return [cards[k] for k in sorted(cards)]


def check_published(params: SynthParams) -> None:
    """The pre-flight check: every dataset `filter.dedupe_against` names is published."""
    store, missing = Store(params.store), []
    for ref in params.filter.dedupe_against:
        name, _, version = ref.partition("/")
        path = f"{publish.dataset_dir(store, name, version)}/card.json" if version else \
            store.path("datasets", name, "latest.json")
        if not store.exists(path):
            missing.append(ref)
    if missing:
        raise FileNotFoundError(f"not published in store {params.store!r}: {', '.join(map(repr, missing))} "
                                "(publish them first, or leave them out)")


def _signature_table(labels: list[str], texts: list[str], duplicates: list[str | None] | None = None,
                     index: dedupe.Index | None = None) -> pa.Table:
    """The signatures of `texts`; with an `index`, each text is checked against it (and added when
    new) in order, its reason in `duplicates`' place."""
    exacts = [dedupe.exact_key(t) for t in texts]
    signatures = [dedupe.signature(t) for t in texts]
    if index is not None:
        duplicates = [index.admit(*row) for row in zip(labels, exacts, signatures)]
    flat = np.concatenate(signatures) if signatures else np.zeros(0, np.uint32)
    minhash = pa.ListArray.from_arrays(pa.array(np.arange(0, len(flat) + 1, dedupe.NUM_PERM, dtype=np.int32)),
                                       pa.array(flat, pa.uint32()))
    return pa.table({"label": labels, "exact": exacts, "minhash": minhash,
                     "duplicate": duplicates or [None] * len(labels)}, schema=SIGNATURES)


def dataset_signatures(store: Store, card: dict) -> str:
    """Where a published dataset's signatures are (computed once, streamed a batch at a time)."""
    path = store.path("index", "minhash", f"{card['sha256']}.parquet")
    if not store.exists(path):
        folder, parts, offset = publish.dataset_dir(store, card["name"], card["version"]), [], 0
        for batch in publish.dataset_batches(store, folder, ["anchor", "positive"], BATCH_ROWS):
            texts = [f"{a}\n{p}" for a, p in zip(batch["anchor"].to_pylist(), batch["positive"].to_pylist())]
            labels = [f"published {card['name']}/{card['version']}#{offset + i}" for i in range(len(texts))]
            parts.append(_signature_table(labels, texts))
            offset += len(texts)
        store.write_table(path, pa.concat_tables(parts) if parts else SIGNATURES.empty_table())
    return path


def _add(index: dedupe.Index, batches: Iterable[pa.RecordBatch]) -> None:
    """Put the kept rows of signature batches into the index (a duplicate was never added)."""
    for batch in batches:
        values = batch["minhash"].flatten().to_numpy().reshape(-1, dedupe.NUM_PERM)
        for label, exact, row, duplicate in zip(batch["label"].to_pylist(), batch["exact"].to_pylist(), values,
                                                batch["duplicate"].to_pylist()):
            if duplicate is None:
                index.add(label, exact, row)


def fingerprints(params: SynthParams, run_id: str, made: list[ShardRecord]) -> Iterator[str]:
    """Each shard's fingerprint: the code, the threshold, the datasets avoided, then every shard up to it."""
    code = stable_hash(inspect.getsource(dedupe), inspect.getsource(sys.modules[__name__]), length=12)
    chained = stable_hash(STAGE, code, params.filter.near_duplicate_threshold,
                          [c["sha256"] for c in datasets_against(params, run_id)])
    for record in made:
        chained = stable_hash(chained, record.stage, record.key, record.sha256)
        yield chained


def find(params: SynthParams, run_id: str, run_token: str, made: list[ShardRecord],
         progress: Callable[[int, int], None] | None = None) -> list[ShardRecord]:
    """One record per shard of `made` (revised and grounded shards, in the order they count), each
    committed with its rows' signatures and duplicate reasons; shards already committed are reused."""
    store = Store(params.store)
    out_dir, index = StageDir(store, run_id, STAGE), dedupe.Index(params.filter.near_duplicate_threshold)
    for card in datasets_against(params, run_id):
        _add(index, store.batches(dataset_signatures(store, card), SIGNATURES.names, BATCH_ROWS))
    records = []
    for i, (record, fp) in enumerate(zip(made, fingerprints(params, run_id, made))):
        if (done := out_dir.committed(record.key, fp)) is None:
            done = _check_shard(store, out_dir, index, record, fp, run_token)
        else:
            _add(index, store.batches(out_dir.shard_path(record.key), SIGNATURES.names, BATCH_ROWS))
        records.append(done)
        if progress is not None:
            progress(i + 1, len(made))
    return records


def _check_shard(store: Store, out_dir: StageDir, index: dedupe.Index, record: ShardRecord, fp: str,
                 run_token: str) -> ShardRecord:
    started = time.monotonic()
    rows = StageDir(store, out_dir.run_id, record.stage).read([record.key]).select(["example_id", "anchor", "positive"])
    labels = rows["example_id"].to_pylist()
    texts = [f"{a}\n{p}" for a, p in zip(rows["anchor"].to_pylist(), rows["positive"].to_pylist())]
    table = _signature_table(labels, texts, index=index)
    duplicates = table["duplicate"].to_pylist()
    kinds = Counter(d.split(" ", 1)[0] for d in duplicates if d)
    done = ShardRecord(key=record.key, fingerprint=fp, rows=len(labels) - sum(kinds.values()), stage=STAGE,
                       dropped=sum(kinds.values()), rows_in=len(labels), seconds=round(time.monotonic() - started, 2),
                       run_token=run_token, extra={"duplicates_exact": kinds["exact"], "duplicates_near": kinds["near"]})
    return out_dir.commit(table, done)


def reasons(store: Store, run_id: str, record: ShardRecord) -> dict[str, str]:
    """example_id -> why it repeats an earlier row, for the rows of one shard that do."""
    table = StageDir(store, run_id, STAGE).read([record.key]).select(["label", "duplicate"])
    return {label: why for label, why in zip(table["label"].to_pylist(), table["duplicate"].to_pylist()) if why}
