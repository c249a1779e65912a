import json
import os

import pyarrow as pa
import pytest

from embedfactory.store import ShardRecord, StageDir, Store, StoreError


def test_commit_then_committed_only_with_the_same_fingerprint(tmp_path):
    stage = StageDir(Store(str(tmp_path)), "run-1", "examples")
    table = pa.table({"status": ["ok", "rejected"], "x": [1, 2]})
    stage.commit(table, ShardRecord(key="00000", fingerprint="fp-a", rows=1, rejected=1))
    assert stage.committed("00000", "fp-a").rows == 1
    assert stage.committed("00000", "fp-b") is None
    assert stage.committed("00001", "fp-a") is None
    assert stage.read().column("x").to_pylist() == [1]          # rejected rows left out
    assert stage.read(ok_only=False).num_rows == 2


def test_a_parquet_without_its_commit_record_is_not_done(tmp_path):
    store = Store(str(tmp_path))
    stage = StageDir(store, "run-1", "tasks")
    store.write_table(stage.shard_path("00000"), pa.table({"x": [1]}))  # crash before the record
    assert stage.committed("00000", "fp") is None


def test_writes_leave_no_temporary_files(tmp_path):
    store = Store(str(tmp_path))
    store.write_json(store.path("a", "b.json"), {"k": 1})
    assert os.listdir(tmp_path / "a") == ["b.json"]
    assert json.loads((tmp_path / "a" / "b.json").read_text()) == {"k": 1}


def test_manifest_lists_shards_and_totals(tmp_path):
    stage = StageDir(Store(str(tmp_path)), "r", "personas")
    records = [ShardRecord(key=k, fingerprint="f", rows=n, rejected=1) for k, n in (("00001", 3), ("00000", 2))]
    manifest = json.loads(open(stage.write_manifest(records, {"count": 5})).read())
    assert list(manifest["shards"]) == ["00000", "00001"]
    assert (manifest["rows"], manifest["rejected"], manifest["params"]) == (5, 2, {"count": 5})


def test_unwritable_store_fails_early_with_its_name(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="a-file"):
        Store(str(blocker / "store")).check_writable()


def test_unknown_scheme_is_refused():
    with pytest.raises(StoreError, match="gs://"):
        Store("gs://bucket/x")


def test_read_of_an_empty_stage_says_which(tmp_path):
    with pytest.raises(StoreError, match="verdicts"):
        StageDir(Store(str(tmp_path)), "r", "verdicts").read()
