"""`python -m embedfactory show`: the stage counts, reject reasons and one row's lineage, from stage
rows laid out as the flow commits them (the real flow's output is inspected in test_flow_synth)."""
import pyarrow as pa
import pytest

from embedfactory.report import show
from embedfactory.store import ShardRecord, StageDir, Store, StoreError

RUN = "run-7"


def commit(store, stage, rows):
    StageDir(store, RUN, stage).commit(pa.Table.from_pylist(rows), ShardRecord(key="00000", fingerprint="f",
                                                                               rows=len(rows), stage=stage))


@pytest.fixture
def store(tmp_path):
    store = Store(str(tmp_path))
    commit(store, "personas", [{"persona_id": "p1", "persona": "A night-shift nurse", "status": "ok"}])
    commit(store, "tasks", [{"task_id": "t1", "persona_id": "p1", "task_type": "retrieval", "topic": "Health",
                             "task": "Given a drug name, find its interactions", "status": "ok"}])
    commit(store, "examples", [
        {"example_id": "e1", "task_id": "t1", "persona_id": "p1", "task_type": "retrieval", "attributes": "{}",
         "fields": '{"user_query": "warfarin and aspirin"}', "status": "ok", "reject_reason": None},
        {"example_id": "e2", "task_id": "t1", "persona_id": "p1", "task_type": "retrieval", "attributes": "{}",
         "fields": None, "status": "rejected", "reject_reason": "gate echo: user_query repeats the prompt"}])
    commit(store, "verdicts", [
        {"example_id": "e1", "task_id": "t1", "persona_id": "p1", "kept": True, "rank": 1, "drop_reason": None,
         "anchor": "warfarin and aspirin", "positive": "Aspirin raises bleeding risk with warfarin.",
         "negative": None, "status": "ok"}])
    return store


def test_show_counts_stages_and_follows_one_row_back_to_its_persona(store):
    text = show.show(store.root)
    assert text.startswith(f"run {RUN} ")
    assert "examples       1 ok     1 rejected" in text and "verdicts       1 ok     0 rejected      1 kept" in text
    lineage = text[text.index("lineage of e1"):]
    assert [s for s in ("[personas]", "[tasks]", "[examples]", "[verdicts]") if s in lineage] == [
        "[personas]", "[tasks]", "[examples]", "[verdicts]"]
    assert "A night-shift nurse" in lineage and "Aspirin raises bleeding risk" in lineage


def test_show_rejected_rows_with_their_reasons(store):
    text = show.show(store.root, stage="examples", rejected=True)
    assert "1 rejected rows of examples" in text and "    1  gate echo" in text
    assert "gate echo: user_query repeats the prompt" in text
    with pytest.raises(StoreError, match="has no stage 'revised'; it has: personas, tasks, examples, verdicts"):
        show.show(store.root, stage="revised")
    with pytest.raises(StoreError, match="no row 'nope'"):
        show.lineage(store, RUN, "nope")
