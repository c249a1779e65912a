"""Cost for paid APIs: shipped and configured prices, the projection before a run, the cost per stage
in the summary, and a budget that stops a real run cleanly (committed shards kept, a rerun resumes)."""
import pytest

from embedfactory.config import Price, SynthParams
from embedfactory.llm import costs
from embedfactory.llm.costs import BudgetExceeded
from embedfactory.store import ShardRecord


def gpt(**extra) -> SynthParams:
    return SynthParams(generator={"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini"},
                       brainstormer={"base_url": "https://api.openai.com/v1", "model": "gpt-4o"},
                       synth={"personas": 10, "tasks_per_persona": 2, "examples_per_task": 3, "revise": True},
                       train=None, **extra)


def test_prices_shipped_configured_and_unknown():
    assert costs.price_of("gpt-4o", {}) == Price(input_per_million=2.5, output_per_million=10.0)
    assert costs.price_of("openai/gpt-4o-mini", {}) == costs.KNOWN_PRICES["gpt-4o-mini"]
    mine = Price(input_per_million=1.0, output_per_million=2.0)
    assert costs.price_of("gpt-4o", {"gpt-4o": mine}) == mine  # the configuration wins
    assert costs.price_of("Qwen/Qwen2.5-7B-Instruct", {}) is None  # self-hosted: no price
    assert costs.cost(1_000_000, 500_000, mine) == 2.0 and costs.cost(10, 10, None) == 0.0


def test_the_projection_counts_calls_per_stage_and_learns_tokens_from_earlier_runs():
    params = gpt()
    rows = {r["stage"]: r for r in costs.projection(params, brainstormed=True, with_personas=True)}
    assert [rows[s]["calls"] for s in ("personas", "tasks", "examples", "revised")] == [5, 20, 60, 60]
    prompt, completion = costs.TYPICAL_TOKENS["examples"]
    assert rows["examples"]["cost_usd"] == round((60 * prompt * 0.15 + 60 * completion * 0.60) / 1e6, 4)
    assert rows["tasks"]["model"] == "gpt-4o" and rows["revised"]["model"] == "gpt-4o-mini"
    assert rows["total"]["calls"] == 145
    history = {"examples": [ShardRecord(key="0", fingerprint="f", rows=1, llm_calls=10, prompt_tokens=4000,
                                        completion_tokens=9000)]}
    measured = {r["stage"]: r for r in costs.projection(params, True, True, history)}
    assert measured["examples"]["completion_tokens"] == 60 * 900 and measured["examples"]["tokens_from"] == "earlier runs"
    warning = costs.over_budget(gpt(budget_usd=0.001), costs.projection(params, True, True))
    total = costs.projection(params, True, True)[-1]["cost_usd"]
    assert warning.startswith(f"the run is projected to cost ${total:.4f}, above its budget of $0.0010")
    assert costs.over_budget(gpt(budget_usd=100), costs.projection(params, True, True)) is None


def test_a_spend_counts_replies_as_they_arrive_and_stops_new_requests():
    params = gpt(budget_usd=1.0)
    records = {"examples": [ShardRecord(key="0", fingerprint="f", rows=1, prompt_tokens=1_000_000, completion_tokens=0)]}
    assert costs.spent(records, params) == pytest.approx(0.15)  # committed: gpt-4o-mini input
    spend = costs.Spend(params, costs.spent(records, params))
    spend.check()
    spend.charge("gpt-4o", 0, 100_000)  # a reply in flight: $1.00 of gpt-4o output
    with pytest.raises(BudgetExceeded, match=r"run cost \$1\.1500 reached its budget of \$1\.0000"):
        spend.check()
    costs.Spend(gpt(), 99.0).check()  # no budget: never stops


def test_the_client_finishes_what_is_in_flight_then_stops(tmp_path):
    from fake_llm import FakeChatServer

    from embedfactory.config import Endpoint
    from embedfactory.llm.client import ChatClient, Request
    from embedfactory.schemas import RetrievalExample

    params = gpt(budget_usd=0.0004, prices={"fake": Price(input_per_million=10.0, output_per_million=10.0)})
    spend = costs.Spend(params, 0.0)
    with FakeChatServer() as server, costs.active(spend):  # 15 tokens a reply: $0.00015 each
        client = ChatClient(Endpoint(base_url=server.base_url, model="fake", concurrency=1), server.base_url)
        with pytest.raises(BudgetExceeded):
            client.run_sync([Request([{"role": "user", "content": str(i)}], RetrievalExample, seed=i) for i in range(10)])
    assert len(server.requests) == 3 and spend.total == pytest.approx(0.00045)  # the third crossed it


@pytest.mark.slow
def test_a_budget_stops_a_real_run_cleanly_and_a_larger_one_resumes_it(tmp_path, prefect_api, llm_server):
    from tiny import tiny

    from flows.synth import synth

    endpoint, url = llm_server
    # the embedded model priced as if it were paid: the persona brainstorm alone spends the budget
    params = tiny(tmp_path, endpoint.model_copy(update={"base_url": url}), tasks_per_persona=1, revise=False)
    priced = {endpoint.model: Price(input_per_million=1000.0, output_per_million=1000.0)}
    tight = params.model_copy(update={"prices": priced, "budget_usd": 0.01, "train": None})
    with pytest.raises(BudgetExceeded, match="reached its budget"):
        synth(tight)
    from embedfactory.store import StageDir, Store
    from embedfactory.synth.pipeline import default_run_id
    store, run_id = Store(str(tmp_path)), default_run_id(tight)
    assert not StageDir(store, run_id, "tasks").records()  # nothing after the spend started
    personas = StageDir(store, run_id, "personas")
    kept = personas.records() or store.list(f"{personas.dir}/_replies", recursive=True)
    assert kept  # what was paid is committed or in the shard's reply log
    result = synth(tight.model_copy(update={"budget_usd": 1000.0}))  # same run id: resumes
    summary = {row["stage"]: row for row in result["summary"]}
    assert summary["tasks"]["llm_calls"] > 0 and summary["tasks"]["cost_usd"] > 0
    assert not store.list(f"{personas.dir}/_replies", recursive=True)  # used, then cleared at the commit


def test_align_costs_the_teachers_calls_per_stage_and_counts_its_judgments_against_the_budget(tmp_path):
    from embedfactory.align import run
    from embedfactory.align.config import AlignParams
    from embedfactory.config import Endpoint
    from embedfactory.store import ShardRecord, StageDir, Store

    params = AlignParams(store=str(tmp_path), teacher=Endpoint(base_url="https://api.openai.com/v1", model="gpt-4o"),
                         budget_usd=5.0)
    seed = run.synth_params(params)
    assert seed.budget_usd == 5.0 and seed.prices == params.prices  # the seed set runs under the same budget
    paid = ShardRecord(key="00000", fingerprint="f", rows=1, llm_calls=2, prompt_tokens=1_000_000,
                       completion_tokens=100_000)
    report = {r["stage"]: r for r in run.teacher_report(params, {"examples": [paid], "judged": [paid]})}
    assert report["judged"]["cost_usd"] == 3.5 and report["total"]["cost_usd"] == 7.0  # gpt-4o: $2.50 + $1.00
    import pyarrow as pa
    StageDir(Store(str(tmp_path)), "align", "judged").commit(pa.table({"x": [1]}), paid)
    spent = costs.spent(costs.run_records(Store(str(tmp_path)), "align"), seed)
    assert spent == pytest.approx(3.5)  # a rerun's budget counts the judgments already paid for


def test_a_worker_sees_the_others_replies_in_flight_and_stops_at_the_run_budget(tmp_path):
    """Fan-out: two workers of one run, each with its own Spend; each reply is in its shard's reply log within
    seconds, so a worker's next look at the store counts the other's spending (and its own only once)."""
    from embedfactory.llm import replylog
    from embedfactory.store import Store

    params = gpt(store=str(tmp_path), budget_usd=1.0)  # gpt-4o-mini: $0.60 per million completion tokens
    store = Store(params.store)
    a, b = (costs.Spend(params, costs.store_spent(params, "run-1"), "run-1") for _ in range(2))
    log_a = replylog.ReplyLog(store, store.path("runs", "run-1", "examples", "_replies", "00000"))
    log_b = replylog.ReplyLog(store, store.path("runs", "run-1", "examples", "_replies", "00001"))

    def pay(spend, log, key):  # what the client does with a reply: charge it, then log it (written at once here)
        spend.charge("gpt-4o-mini", 0, 1_000_000)
        log.put(key, {"prompt_tokens": 0, "completion_tokens": 1_000_000})
        log.flush()

    pay(a, log_a, "a1")
    pay(b, log_b, "b1")
    a.check()  # $0.60 seen by each: under the budget
    assert costs.store_spent(params, "run-1") == pytest.approx(1.2)
    a.seen_at -= costs.Spend.SEEN_EVERY_S  # its next look at the store
    with pytest.raises(BudgetExceeded, match=r"run cost \$1\.2000 reached its budget"):
        a.check()
    assert a.total == pytest.approx(1.2)  # its own reply counted once, not in its count and the log both
    # a self-hosted generator costs nothing, and its logs are not read
    self_hosted = SynthParams(store=str(tmp_path), generator={"base_url": "http://gpu-1:8000/v1", "model": "m"},
                              train=None)
    assert costs.store_spent(self_hosted, "run-1") == 0.0


def test_a_budget_stop_on_a_gpu_pool_reaches_flow_synth_by_its_type_not_its_message(prefect_api, monkeypatch, tmp_path):
    """Flow `synth-shard` ends a reached budget as a Failed state named 'BudgetExceeded'; flow
    `synth` raises BudgetExceeded from that name (no retry on a new GPU run), and any other failure,
    whatever its message says, stays a RuntimeError (retried). Fault injection: the shard's stage
    task raises, no model is served."""
    import contextlib
    from types import SimpleNamespace

    from prefect import task

    import flows.shard as shard_flow
    from tasks.synthesis import generate_on_pool

    @task
    def spends(stage, ctx, key, upstream):
        raise BudgetExceeded("run cost $1.2000 reached its budget of $1.0000")

    monkeypatch.setattr(shard_flow, "run_stage_shard", spends)
    monkeypatch.setattr(shard_flow.pipeline, "open_run", lambda *a, **k: contextlib.nullcontext(None))
    params = SynthParams(store=str(tmp_path), fan_out="synth-shard/gpu")
    state = shard_flow.synth_shard(params, "run-x", "t", "00000", ["tasks"], [], return_state=True)
    assert state.is_failed() and state.name == "BudgetExceeded" and "reached its budget" in state.message

    def finished(state):
        return lambda *a, **k: SimpleNamespace(state=state, name="pool-run")

    ctx = SimpleNamespace(params=params, run_id="run-x", run_token="t")
    monkeypatch.setattr("prefect.deployments.run_deployment", finished(state))
    with pytest.raises(BudgetExceeded, match="synth-shard/gpu run pool-run for shard 00000: run cost"):
        generate_on_pool.fn(ctx, "00000", ["tasks"], [])
    from prefect.states import Failed

    monkeypatch.setattr("prefect.deployments.run_deployment",
                        finished(Failed(message="BudgetExceeded: reached its budget, says the text only")))
    with pytest.raises(RuntimeError, match="ended FAILED") as raised:
        generate_on_pool.fn(ctx, "00000", ["tasks"], [])
    assert not isinstance(raised.value, BudgetExceeded)
