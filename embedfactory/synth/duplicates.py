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

import time
from collections import Counter
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from ..config import SynthParams
from ..filter import dedupe
from ..ids import stable_hash
from ..publish import dataset as publish
from ..schemas import SIGNATURES, Reason
from ..store import ShardRecord, StageDir, Store

STAGE = "duplicates"
VERSION = 1
READS = ("example_id", "anchor", "positive")  # of the revised and grounded rows; writes SIGNATURES
BATCH_ROWS = 4096


def avoided(params: SynthParams) -> list[str]:
    """The dataset references the run avoids: `filter.dedupe_against`, or by default its own name."""
    refs = params.filter.dedupe_against
    return [params.dataset_name] if refs is None else refs


def config(params: SynthParams) -> dict:
    """The stage's config slice, all it gets of the run's parameters: the near-duplicate threshold
    and the dataset references it avoids."""
    return {"threshold": params.filter.near_duplicate_threshold, "avoid": avoided(params)}


def datasets_against(store: Store, avoid: list[str], run_id: str) -> list[dict]:
    """The cards of the published datasets named in `avoid` (the run's own version left out)."""
    cards = {}
    for ref in avoid:
        name, _, version = ref.partition("/")
        if version:
            found = [store.read_json(f"{publish.dataset_dir(store, name, version)}/card.json")]
        else:
            found = [c for c in publish.published_cards(store) if c["name"] == name]
        cards.update({(c["name"], c["version"]): c for c in found if c["version"] != run_id})
    return [cards[k] for k in sorted(cards)]


def check_published(params: SynthParams) -> None:
    """The pre-flight check: every dataset `filter.dedupe_against` names is published (the default,
    the run's own earlier versions, may be none)."""
    store, missing = Store(params.store), []
    for ref in params.filter.dedupe_against or []:
        name, _, version = ref.partition("/")
        path = f"{publish.dataset_dir(store, name, version)}/card.json" if version else \
            store.path("datasets", name, "latest.json")
        if not store.exists(path):
            missing.append(ref)
    if missing:
        raise FileNotFoundError(f"not published in store {params.store!r}: {', '.join(map(repr, missing))} "
                                "(publish them first, or leave them out)")


def _signatures(texts: list[str]) -> tuple[list[str], list[np.ndarray]]:
    return [dedupe.exact_key(t) for t in texts], [dedupe.signature(t) for t in texts]


def _signature_table(labels: list[str], exacts: list[str], signatures: list[np.ndarray],
                     duplicates: list[Reason | None]) -> pa.Table:
    flat = np.concatenate(signatures) if signatures else np.zeros(0, np.uint32)
    minhash = pa.ListArray.from_arrays(pa.array(np.arange(0, len(flat) + 1, dedupe.NUM_PERM, dtype=np.int32)),
                                       pa.array(flat, pa.uint32()))
    return pa.table({"label": labels, "exact": exacts, "minhash": minhash, "duplicate": duplicates,
                     "duplicate_kind": [d and d.name for d in duplicates],
                     "duplicate_published": [d and d.published for d in duplicates]}, schema=SIGNATURES)


def signature_version() -> str:
    """The signatures' and the stage's version: part of every fingerprint and of the published
    datasets' index path. Bump VERSION when dedupe.py's signatures or this stage's reasons change
    (tests/test_stage_versions.py pins the code)."""
    return f"v{VERSION}"


def dataset_signatures(store: Store, card: dict) -> str:
    """Where a published dataset's signatures are: computed once per dataset checksum and code
    version, streamed a batch at a time into the file. Its labels are row numbers; `_add` names them."""
    path = store.path("index", "minhash", signature_version(), f"{card['sha256']}.parquet")
    if not store.exists(path):
        folder = publish.dataset_dir(store, card["name"], card["version"])

        def tables() -> Iterator[pa.Table]:
            offset = 0
            for batch in publish.dataset_batches(store, folder, ["anchor", "positive"], BATCH_ROWS):
                texts = dedupe.identity_texts(batch)
                yield _signature_table([str(offset + i) for i in range(len(texts))], *_signatures(texts),
                                       [None] * len(texts))
                offset += len(texts)

        store.write_streamed(path, SIGNATURES, tables())
    return path


def _add(index: dedupe.Index, batches: Iterable[pa.RecordBatch], prefix: str = "") -> None:
    """Put the kept rows of signature batches into the index (a duplicate was never added), each
    labelled `prefix` + its stored label; a prefix marks a published dataset's rows."""
    for batch in batches:
        values = batch["minhash"].flatten().to_numpy().reshape(-1, dedupe.NUM_PERM)
        for label, exact, row, duplicate in zip(batch["label"].to_pylist(), batch["exact"].to_pylist(), values,
                                                batch["duplicate"].to_pylist()):
            if duplicate is None:
                index.add(prefix + label, exact, row, published=bool(prefix))


def fingerprints(cfg: dict, made: list[ShardRecord], against: list[dict]) -> Iterator[str]:
    """Each shard's fingerprint: the version, the threshold, the datasets avoided (their checksums),
    then every shard up to it."""
    chained = stable_hash(STAGE, signature_version(), cfg["threshold"], [c["sha256"] for c in against])
    for record in made:
        chained = stable_hash(chained, record.stage, record.key, record.sha256)
        yield chained


def find(store: Store, cfg: dict, run_id: str, run_token: str, made: list[ShardRecord],
         progress: Callable[[int, int], None] | None = None) -> list[ShardRecord]:
    """One record per shard of `made` (revised and grounded shards, in the order they count), each
    committed with its rows' signatures and duplicate reasons; shards already committed are reused.
    `cfg`: the stage's slice (`config`)."""
    against = datasets_against(store, cfg["avoid"], run_id)
    out_dir, index = StageDir(store, run_id, STAGE), dedupe.Index(cfg["threshold"])
    for card in against:
        _add(index, store.batches(dataset_signatures(store, card), SIGNATURES.names, BATCH_ROWS),
             prefix=f"published {card['name']}/{card['version']}#")
    records = []
    for i, (record, fp) in enumerate(zip(made, fingerprints(cfg, made, against))):
        if (done := out_dir.committed(record.key, fp)) is None:
            done = _check_shard(store, out_dir, index, record, fp, run_token)
        else:  # its signatures back into the index: nothing hashed again
            _add(index, store.batches(out_dir.shard_path(record.key), SIGNATURES.names, BATCH_ROWS))
        records.append(done)
        if progress is not None:
            progress(i + 1, len(made))
    return records


def _check_shard(store: Store, out_dir: StageDir, index: dedupe.Index, record: ShardRecord, fp: str,
                 run_token: str) -> ShardRecord:
    started = time.monotonic()
    rows = StageDir(store, out_dir.run_id, record.stage).read([record.key]).select(list(READS))
    labels = rows["example_id"].to_pylist()
    texts = dedupe.identity_texts(rows)
    exacts, signatures = _signatures(texts)
    duplicates = [index.admit(*row) for row in zip(labels, exacts, signatures)]  # in order: the first copy stays
    kinds = Counter(d.name for d in duplicates if d)
    done = ShardRecord(key=record.key, fingerprint=fp, rows=len(labels) - sum(kinds.values()), stage=STAGE,
                       dropped=sum(kinds.values()), rows_in=len(labels), seconds=round(time.monotonic() - started, 2),
                       run_token=run_token, extra={"duplicates_exact": kinds["exact"], "duplicates_near": kinds["near"]})
    return out_dir.commit(_signature_table(labels, exacts, signatures, duplicates), done)


def reasons(store: Store, run_id: str, side: list[ShardRecord]) -> dict[str, Reason]:
    """example_id -> why it repeats an earlier row, for the rows of the duplicates shard in `side`
    (a verdict shard's side inputs) that do."""
    mine = [s for s in side if s.stage == STAGE]
    if len(mine) != 1:
        raise ValueError(f"a verdict shard needs its one {STAGE!r} shard among its side inputs, got {len(mine)} "
                         "(pipeline.find_duplicates makes them)")
    table = StageDir(store, run_id, STAGE).read(
        [mine[0].key], columns=["label", "duplicate", "duplicate_kind", "duplicate_published"]).to_pydict()
    return {label: Reason("duplicate", kind, text.partition(": ")[2], published)
            for label, text, kind, published in zip(table["label"], table["duplicate"], table["duplicate_kind"],
                                                    table["duplicate_published"]) if kind}
