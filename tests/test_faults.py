"""The real `synth` flow against a server that fails in every way a model server can: the run
completes, every prompt ends as exactly one accepted or rejected row, every paid reply is counted."""
import pyarrow.parquet as pq
import pytest

from embedfactory.config import Endpoint, SynthParams
from fake_llm import FakeChatServer
from flows.synth import synth

RATES = {"http_500": 0.08, "http_429": 0.08, "timeout": 0.04, "truncated": 0.2, "invalid_json": 0.3}


def rows(store, run_id, stage):
    """Every row of every shard of a stage, rejected ones included."""
    return [r for part in sorted((store / "runs" / run_id / stage).glob("part-*.parquet"))
            for r in pq.read_table(part).to_pylist()]


@pytest.mark.slow
def test_a_flaky_server_loses_nothing_and_counts_nothing_twice(tmp_path, prefect_api):
    with FakeChatServer(fault_rates=RATES, seed=3, stall_s=1.5, poison=("Example", 2)) as server, \
            FakeChatServer(fault_rates={"invalid_json": 0.2}, seed=4, models=("fake-revisor",)) as revisor_server, \
            FakeChatServer(fault_rates={"http_500": 0.1, "invalid_json": 0.1}, seed=5,
                           models=("fake-teacher",)) as teacher_server:
        endpoint = Endpoint(base_url=server.base_url, model="fake", timeout_s=1.0, transport_retries=8,
                            concurrency=8)
        revisor = Endpoint(base_url=revisor_server.base_url, model="fake-revisor", concurrency=4)
        teacher = Endpoint(base_url=teacher_server.base_url, model="fake-teacher", transport_retries=8)
        params = SynthParams(store=str(tmp_path), generator=endpoint, revisor=revisor, brainstormer=teacher,
                             train=None, synth={
            "personas": 6, "tasks_per_persona": 3, "examples_per_task": 2, "personas_per_shard": 3, "revise": True,
            "task_mix": {"retrieval": 2, "classification": 2, "short-short": 1, "long-long": 1, "sts": 1,
                         "bitext": 1}})
        result = synth(params)
    run = result["run_id"]
    summary = {r["stage"]: r for r in result["summary"]}
    print(f"server: {len(server.requests)} requests, {dict(server.counts)}")  # shown with pytest -s
    assert server.counts["truncated"] and server.counts["invalid_json"] and server.counts["timeout"]
    assert server.counts["http_500"] and server.counts["http_429"]

    tasks, examples, revised = (rows(tmp_path, run, s) for s in ("tasks", "examples", "revised"))
    ok_tasks = [t for t in tasks if t["status"] == "ok"]
    ok_examples = [e for e in examples if e["status"] == "ok"]

    # every issued prompt is exactly one row, accepted or rejected with a reason
    assert len(examples) == 2 * len(ok_tasks)
    assert len({e["example_id"] for e in examples}) == len(examples)
    assert {r["example_id"] for r in revised} == {e["example_id"] for e in ok_examples}
    rejected = [e for e in examples if e["status"] == "rejected"]
    assert len(rejected) >= len(server.poisoned) == 2  # random faults may reject more
    assert all(e["reject_reason"] and e["attempts"] == 3 for e in rejected)
    assert {e["reject_reason"].split(":")[0] for e in rejected} <= {"invalid JSON", "truncated", "schema"}
    assert summary["examples"]["rejected"] == len(rejected)
    assert summary["examples"]["rows_out"] == len(ok_examples)
    failed_revisions = sum(r["revision_status"] == "rejected" for r in revised)
    assert summary["revised"]["rejected"] == failed_revisions and summary["verdicts"]["rejected"] == 0
    assert summary["revised"]["rows_out"] == len(revised)  # a failed revision keeps its original

    # the revisor has its own endpoint and model; the generator's server never sees a revise prompt
    assert {r["model"] for r in revised} == {"fake-revisor"} and revisor_server.requests
    assert all(r["response_format"]["json_schema"]["name"].endswith("Revision") for r in revisor_server.requests)
    assert not any(r["response_format"]["json_schema"]["name"].endswith("Revision") for r in server.requests)

    # the brainstorm (personas, tasks) has its own endpoint (SPEED: the teacher); nothing else goes there
    def schemas(srv):
        return {r["response_format"]["json_schema"]["name"] for r in srv.requests}
    assert schemas(teacher_server) == {"PersonaList", "TaskList"}
    assert not schemas(server) & {"PersonaList", "TaskList"}
    assert {t["model"] for t in tasks if t["model"]} == {"fake-teacher"}
    usage = {u["stage"]: u for u in result["dataset"]["quality"]["llm_usage"]}
    assert usage["tasks"]["model"] == usage["personas"]["model"] == "fake-teacher"

    # every reply the servers completed was counted once, brainstorm included, transport faults not at all
    assert sum(r["llm_calls"] for r in result["summary"]) == (
        server.counts["paid"] + revisor_server.counts["paid"] + teacher_server.counts["paid"])
