"""Publishing: the Hub layout and card.json of a run's kept rows, and an empty or nearly empty set
refused with its counts, leaving `latest` on the previous dataset."""
import pyarrow as pa
import pytest

from embedfactory.publish.dataset import DATA_FILE, TooFewRows, publish, read_dataset, resolve_dataset
from embedfactory.schemas import Reason
from embedfactory.store import ShardRecord, StageDir, Store


def verdicts(store: Store, run: str, kept: int, dropped: int) -> StageDir:
    rows = [{"anchor": f"q{i}", "positive": f"p{i}", "negative": None, "task": "Given q, find p",
             "task_type": "retrieval", "persona_id": "a", "task_id": "b", "example_id": f"{run}-{i}",
             "source_id": None, "mined_negatives": [], "status": "ok", "kept": i < kept,
             **({"drop_reason": None, "drop_kind": None, "drop_name": None} if i < kept else
                {"drop_reason": Reason("ranking", "rank", "positive ranked 12 of 40 (top-k 3)"),
                 "drop_kind": "ranking", "drop_name": "rank"})}
            for i in range(kept + dropped)]
    out = StageDir(store, run, "verdicts")
    out.commit(pa.Table.from_pylist(rows), ShardRecord(key="00000", fingerprint="f", rows=len(rows)))
    return out


def test_a_run_that_kept_too_few_rows_publishes_nothing_and_latest_stays(tmp_path):
    store = Store(str(tmp_path))
    first = publish(store, verdicts(store, "run-1", kept=5, dropped=1), "synth", "run-1", {})
    assert first["rows"] == 5 and store.exists(f"{first['path']}/{DATA_FILE}")
    assert read_dataset(store, first["path"]).num_rows == 5
    with pytest.raises(TooFewRows, match=r"run run-2 kept 0 of 4 rows, fewer than min_published_rows 1: "
                                         r"nothing published, `latest` unchanged \(dropped: ranking 4\)"):
        publish(store, verdicts(store, "run-2", kept=0, dropped=4), "synth", "run-2", {})
    with pytest.raises(TooFewRows, match="kept 3 of 3 rows, fewer than min_published_rows 10"):
        publish(store, verdicts(store, "run-3", kept=3, dropped=0), "synth", "run-3", {}, min_rows=10)
    assert resolve_dataset(store, "synth") == first["path"]  # latest untouched
    assert not store.exists(store.path("datasets", "synth", "run-2"))
