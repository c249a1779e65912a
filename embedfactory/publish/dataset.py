"""Publish the kept rows of a run as a training set in sentence-transformers' column layout, in the
Hugging Face Hub's file layout (`data/train-00000-of-00001.parquet` beside a README dataset card,
hub.py), so `datasets.load_dataset(folder)` loads it and the folder can be pushed as it is."""
from __future__ import annotations

import os
from collections import Counter
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from ..outcomes import ExpectedStop
from ..schemas import DATASET, heading
from ..store import StageDir, Store

DATA_FILE = "data/train-00000-of-00001.parquet"  # the Hub's name for a one-file train split


GENERATION_STAGES = ("personas", "tasks", "examples", "grounded")


def upstream_rejects(store: Store, run_id: str) -> str:
    """Why no row reached the verdicts: each generation stage's rejected replies and their main reason
    (e.g. every request refused by the server)."""
    parts = []
    for stage in GENERATION_STAGES:
        folder = StageDir(store, run_id, stage)
        try:
            rows = folder.read(ok_only=False, columns=["status", "reject_reason"]) if folder.records() else None
        except Exception:  # noqa: BLE001 - an explanation must not hide the error it explains
            rows = None
        if rows is None:
            continue
        rejected = rows.filter(pc.equal(rows["status"], "rejected")) if "status" in rows.column_names else rows.slice(0, 0)
        if rejected.num_rows and "reject_reason" in rejected.column_names:
            top = pc.value_counts(rejected["reject_reason"]).to_pylist()
            top = max(top, key=lambda d: d["counts"])
            parts.append(f"{stage}: {rejected.num_rows} of {rows.num_rows} rejected, most for "
                         f"{(top['values'] or '')[:160]!r}")
    return f"; no row reached the filter ({'; '.join(parts)})" if parts else ""


def dataset_dir(store: Store, name: str, version: str) -> str:
    return store.path("datasets", name, version)


class TooFewRows(ExpectedStop, ValueError):
    """A run kept fewer rows than it may publish."""


def publish(store: Store, verdicts: StageDir, name: str, version: str, card: dict, min_rows: int = 1) -> dict:
    """Write `datasets/<name>/<version>/data/train-00000-of-00001.parquet` and its `card.json`; idempotent.
    Fewer than `min_rows` kept rows: TooFewRows, and nothing is written (`latest` unchanged)."""
    table = verdicts.read()
    kept = table.filter(pc.equal(table["kept"], True))
    if kept.num_rows < min_rows:
        dropped = table.filter(pc.invert(table["kept"])).select(["drop_kind", "drop_name"]).to_pydict()
        drops = Counter(heading(k, n) for k, n in zip(dropped["drop_kind"], dropped["drop_name"]) if k)
        why = ", ".join(f"{reason} {n}" for reason, n in drops.most_common(5))
        raise TooFewRows(f"run {version} kept {kept.num_rows} of {table.num_rows} rows, fewer than min_published_rows "
                         f"{min_rows}: nothing published, `latest` unchanged (dropped: {why or 'none'})"
                         + ("" if table.num_rows else upstream_rejects(store, verdicts.run_id))
                         + f"; see `python -m embedfactory show {store.uri} --stage verdicts --rejected`")
    out = kept.rename_columns([{"task": "instruction"}.get(c, c) for c in kept.column_names]).select(DATASET.names)
    out = out.cast(DATASET)
    path = dataset_dir(store, name, version)
    sha = store.write_table(f"{path}/{DATA_FILE}", out)
    counts = pc.value_counts(out["task_type"]).to_pylist() if out.num_rows else []
    summary = {"name": name, "version": version, "rows": out.num_rows, "sha256": sha,
               "columns": DATASET.names,
               "by_task_type": {c["values"]: c["counts"] for c in counts}, **card}
    store.write_json(f"{path}/card.json", summary)
    store.write_json(store.path("datasets", name, "latest.json"), {"version": version})
    return {"path": path, **summary}


def resolve_dataset(store: Store, name: str, version: str | None = None) -> str:
    """The folder of a published dataset; the most recently published version by default."""
    if version is None:
        pointer = store.path("datasets", name, "latest.json")
        if not store.exists(pointer):
            raise FileNotFoundError(f"no published dataset {name!r} in store {store.uri!r}")
        version = store.read_json(pointer)["version"]
    return dataset_dir(store, name, version)


def published_cards(store: Store, exclude_version: str | None = None) -> list[dict]:
    """Cards of every dataset published in the store (but `exclude_version`), oldest name first."""
    root = store.path("datasets")
    if not store.exists(root):
        return []
    cards = [store.read_json(p) for p in store.list(root, recursive=True) if p.endswith("/card.json")]
    return sorted((c for c in cards if c["version"] != exclude_version),
                  key=lambda c: (c["name"], c["version"]))


def read_dataset(store: Store, path: str) -> pa.Table:
    return store.read_table(f"{path}/{DATA_FILE}")


def dataset_batches(store: Store, path: str, columns: list[str], batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
    """A published dataset's columns a record batch at a time."""
    return store.batches(f"{path}/{DATA_FILE}", columns, batch_size)


def data_files(store: Store, path: str, expires_s: int = 3600) -> list[str]:
    """What `datasets.load_dataset("parquet", data_files=...)` reads a published set from: local file
    paths, or for a bucket presigned HTTPS URLs (no s3fs needed; boto3 signs with the store's settings)."""
    files = [f"{path}/{DATA_FILE}"] if store.exists(f"{path}/{DATA_FILE}") else []
    if store.is_local:
        return files
    import boto3

    s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    return [s3.generate_presigned_url("get_object", ExpiresIn=expires_s,
                                      Params={"Bucket": f.split("/", 1)[0], "Key": f.split("/", 1)[1]})
            for f in files]
