"""The run summary says why rows were dropped: per gate, duplicates, and the round trip."""
from embedfactory.report.summary import format_table, reasons, stage_summary
from embedfactory.store import ShardRecord


def test_the_summary_names_each_gate_duplicates_and_ranking_drops():
    verdicts = [ShardRecord(key="00000", fingerprint="f", rows=10, dropped=9, stage="verdicts", run_token="t",
                            extra={"gate_copy": 3, "gate_length": 1, "duplicates_exact": 1, "duplicates_near": 1}),
                ShardRecord(key="00001", fingerprint="f", rows=4, dropped=3, stage="verdicts", run_token="t",
                            extra={"gate_copy": 2, "duplicates_exact": 0})]
    personas = [ShardRecord(key="00000", fingerprint="f", rows=4, stage="personas", run_token="t",
                            extra={"gate_persona": 2, "duplicates_removed": 1})]
    assert reasons(verdicts) == "gate copy 5, ranking 4, duplicate 2, gate length 1"
    assert reasons(personas) == "gate persona 2"
    table = stage_summary({"personas": personas, "verdicts": verdicts}, "t")
    assert [row["why"] for row in table] == ["gate persona 2", "gate copy 5, ranking 4, duplicate 2, gate length 1"]
    assert "gate copy 5" in format_table(table).splitlines()[2]
