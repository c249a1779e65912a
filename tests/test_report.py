"""The run summary says why rows were dropped: per gate, duplicates, and the round trip."""
from embedfactory.report.summary import format_table, reasons, stage_summary
from embedfactory.store import ShardRecord


def test_the_summary_names_each_gate_duplicates_and_ranking_drops():
    """From the typed counts a shard's record keeps (kind -> name -> rows), not from reason texts."""
    verdicts = [ShardRecord(key="00000", fingerprint="f", rows=10, dropped=10, stage="verdicts", run_token="t",
                            extra={"reasons": {"gate": {"copy": 3, "length": 1}, "duplicate": {"exact": 1, "near": 1},
                                               "ranking": {"rank": 4}}, "duplicates_exact": 1}),
                ShardRecord(key="00001", fingerprint="f", rows=4, dropped=2, stage="verdicts", run_token="t",
                            extra={"reasons": {"gate": {"copy": 2}}})]
    personas = [ShardRecord(key="00000", fingerprint="f", rows=4, stage="personas", run_token="t",
                            extra={"reasons": {"gate": {"echo": 2}}, "duplicates_removed": 1})]
    assert reasons(verdicts) == "gate copy 5, ranking 4, duplicate 2, gate length 1"
    assert reasons(personas) == "gate echo 2"
    table = stage_summary({"personas": personas, "verdicts": verdicts}, "t")
    assert [row["why"] for row in table] == ["gate echo 2", "gate copy 5, ranking 4, duplicate 2, gate length 1"]
    assert "gate copy 5" in format_table(table).splitlines()[2]
