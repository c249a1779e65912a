"""Parquet shards on a local folder or any S3-compatible bucket, committed atomically.

Layout (docs/running.md, "What a run writes")::

    <root>/runs/<run_id>/<stage>/part-<key>.parquet   one shard = one task run's output
    <root>/runs/<run_id>/<stage>/_shards/<key>.json   its commit record, written after the Parquet
    <root>/runs/<run_id>/<stage>/_manifest.json       all commit records of the stage + its params
    <root>/datasets/<name>/<version>/                 published training sets

A shard counts as done only when its commit record exists and names the same fingerprint, so a
crash between the Parquet write and the record write just redoes that shard. Records are one object
per shard (no read-modify-write), which keeps concurrent workers on a shared bucket safe.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class StoreError(RuntimeError):
    pass


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if uri.startswith("s3://"):
        fs = pafs.S3FileSystem(
            endpoint_override=os.environ.get("AWS_ENDPOINT_URL") or None,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        )
        return fs, uri[len("s3://"):].rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise StoreError(f"store {uri!r}: only local paths and s3:// URIs are supported")
    path = Path(uri.removeprefix("file://")).expanduser().resolve()
    return pafs.LocalFileSystem(), str(path)


class Store:
    """A root folder of Parquet datasets on pyarrow's filesystem layer."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = _filesystem(uri)
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def check_writable(self) -> None:
        """Fail early, with the store in the message, when the root cannot be written."""
        probe = self.path(f".write-probe-{uuid.uuid4().hex}")
        try:
            self.fs.create_dir(self.root, recursive=True)
            self.write_bytes(probe, b"ok")
            self.fs.delete_file(probe)
        except Exception as exc:  # any backend error means the same thing to the user
            raise StoreError(f"store {self.uri!r} is not writable: {exc}") from exc

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write so that readers see the old object or the whole new one, never half of it."""
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self.is_local:  # an S3 PUT is atomic already
            with self.fs.open_output_stream(path) as out:
                out.write(data)
            return
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(tmp) as out:
            out.write(data)
        self.fs.move(tmp, path)

    def delete(self, path: str) -> None:
        if self.exists(path):
            self.fs.delete_file(path)

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def write_json(self, path: str, obj) -> None:
        self.write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, path: str):
        return json.loads(self.read_bytes(path))

    def write_table(self, path: str, table: pa.Table) -> str:
        """Write a Parquet file atomically; returns its sha256."""
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        self.write_bytes(path, data)
        return hashlib.sha256(data).hexdigest()

    def write_streamed(self, path: str, schema: pa.Schema, tables: Iterable[pa.Table]) -> None:
        """Write a Parquet file a table at a time (never whole in memory), atomically like write_bytes:
        a local file goes to a temporary name first; an S3 upload completes only when closed."""
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        target = path if not self.is_local else f"{path}.tmp-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(target) as out, pq.ParquetWriter(out, schema, compression="zstd") as writer:
            for table in tables:
                writer.write_table(table)
        if target != path:
            self.fs.move(target, path)

    def read_table(self, path: str, columns: list[str] | None = None) -> pa.Table:
        """A Parquet file; `columns`: only those it has, the others never read."""
        with self.fs.open_input_file(path) as f:
            if columns is None:
                return pq.read_table(f)
            file = pq.ParquetFile(f)
            return file.read(columns=[c for c in columns if c in file.schema_arrow.names])

    def batches(self, path: str, columns: list[str], batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
        """A Parquet file's columns, streamed a record batch at a time (the table is never whole)."""
        with self.fs.open_input_file(path) as f:
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns)

    def list(self, path: str, recursive: bool = False) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File)

    def upload_dir(self, local_dir: str | Path, path: str) -> None:
        local_dir = Path(local_dir)
        for f in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            self.write_bytes(f"{path}/{f.relative_to(local_dir).as_posix()}", f.read_bytes())

    def download_dir(self, path: str, local_dir: str | Path) -> None:
        infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=True))
        for info in infos:
            if info.type == pafs.FileType.File:
                target = Path(local_dir) / info.path[len(path):].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.read_bytes(info.path))


@dataclass
class ShardRecord:
    """What a committed shard holds and what it cost to make."""

    key: str
    fingerprint: str
    rows: int
    stage: str = ""
    rejected: int = 0  # malformed replies kept as rejected rows
    dropped: int = 0  # valid rows a filter turned away (kept in the shard with the reason)
    rows_in: int = 0
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the server reused from its prefix cache (where reported)
    schema_fallbacks: int = 0  # requests sent with a weaker structured-output mode than asked
    seconds: float = 0.0
    sha256: str = ""
    run_token: str = ""  # the flow run that made it
    extra: dict = field(default_factory=dict)


class StageDir:
    """One stage of one run: its shards, commit records and manifest."""

    def __init__(self, store: Store, run_id: str, stage: str):
        self.store, self.run_id, self.stage = store, run_id, stage
        self.dir = store.path("runs", run_id, stage)

    def shard_path(self, key: str) -> str:
        return f"{self.dir}/part-{key}.parquet"

    def _record_path(self, key: str) -> str:
        return f"{self.dir}/_shards/{key}.json"

    def committed(self, key: str, fingerprint: str) -> ShardRecord | None:
        """The shard's record if it was committed with this fingerprint, else None."""
        path = self._record_path(key)
        if not self.store.exists(path):
            return None
        record = ShardRecord(**self.store.read_json(path))
        if record.fingerprint != fingerprint or not self.store.exists(self.shard_path(key)):
            return None
        return record

    def commit(self, table: pa.Table, record: ShardRecord) -> ShardRecord:
        record.sha256 = self.store.write_table(self.shard_path(record.key), table)
        self.store.write_json(self._record_path(record.key), asdict(record))
        return record

    def records(self) -> list[ShardRecord]:
        """The commit records of every committed shard (none for a stage not started)."""
        return [ShardRecord(**self.store.read_json(p)) for p in self.store.list(f"{self.dir}/_shards")
                if p.endswith(".json")]

    def read(self, keys: list[str] | None = None, ok_only: bool = True, columns: list[str] | None = None) -> pa.Table:
        """Rows of the given shards (all committed shards by default), rejected rows left out;
        `columns`: only those (the ones a shard lacks are left out), read from the files alone."""
        if keys is None:
            keys = [p.rsplit("/", 1)[1][:-5] for p in self.store.list(f"{self.dir}/_shards")]
        if columns is not None and ok_only:
            columns = list(dict.fromkeys([*columns, "status"]))
        tables = [self.store.read_table(self.shard_path(k), columns) for k in keys]
        if not tables:
            raise StoreError(f"stage {self.stage!r} of run {self.run_id!r} has no committed shards")
        table = pa.concat_tables(tables, promote_options="default")
        if ok_only and "status" in table.column_names:
            table = table.filter(pc.equal(table["status"], "ok"))
        return table

    def write_manifest(self, records: list[ShardRecord], params: dict) -> str:
        path = f"{self.dir}/_manifest.json"
        self.store.write_json(path, {
            "run_id": self.run_id,
            "stage": self.stage,
            "params": params,
            "rows": sum(r.rows for r in records),
            "rejected": sum(r.rejected for r in records),
            "shards": {r.key: asdict(r) for r in sorted(records, key=lambda r: r.key)},
        })
        return path
