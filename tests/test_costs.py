"""Cost for paid APIs: shipped and configured prices, the projection before a run, the cost per stage
in the summary, and a budget that stops a real run cleanly (committed shards kept, a rerun resumes)."""
import pytest

from embedfactory import costs
from embedfactory.config import Price, SynthParams
from embedfactory.costs import BudgetExceeded
from embedfactory.store import ShardRecord


def gpt(**extra) -> SynthParams:
    return SynthParams(generator={"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini"},
                       brainstormer={"base_url": "https://api.openai.com/v1", "model": "gpt-4o"},
                       synth={"personas": 10, "tasks_per_persona": 2, "examples_per_task": 3}, train=None, **extra)


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


def test_spent_and_the_budget_check():
    params = gpt(budget_usd=1.0)
    records = {"examples": [ShardRecord(key="0", fingerprint="f", rows=1, prompt_tokens=1_000_000, completion_tokens=0)]}
    assert costs.check_budget(params, records) == pytest.approx(0.15)
    records["tasks"] = [ShardRecord(key="0", fingerprint="f", rows=1, prompt_tokens=0, completion_tokens=100_000)]
    with pytest.raises(BudgetExceeded, match=r"run cost \$1\.1500 reached its budget of \$1\.0000"):
        costs.check_budget(params, records)


@pytest.mark.slow
def test_a_budget_stops_a_real_run_cleanly_and_a_larger_one_resumes_it(tmp_path, prefect_api, llm_server):
    from flows.synth import synth
    from tiny import tiny

    endpoint, url = llm_server
    # the embedded model priced as if it were paid: the persona brainstorm alone spends the budget
    params = tiny(tmp_path, endpoint.model_copy(update={"base_url": url}), tasks_per_persona=1, revise=False)
    priced = {endpoint.model: Price(input_per_million=1000.0, output_per_million=1000.0)}
    tight = params.model_copy(update={"prices": priced, "budget_usd": 0.01, "train": None})
    with pytest.raises(BudgetExceeded, match="reached its budget"):
        synth(tight)
    from embedfactory.pipeline import default_run_id
    from embedfactory.store import StageDir, Store
    run_id = default_run_id(tight)
    committed = {s: len(StageDir(Store(str(tmp_path)), run_id, s).records()) for s in ("personas", "tasks")}
    assert committed == {"personas": 1, "tasks": 0}  # the shard that spent it is kept, nothing after it started
    result = synth(tight.model_copy(update={"budget_usd": 1000.0}))  # same run id: resumes
    summary = {row["stage"]: row for row in result["summary"]}
    assert summary["personas"]["reused"] == 1 and summary["personas"]["llm_calls"] == 0
    assert summary["tasks"]["llm_calls"] > 0 and summary["tasks"]["cost_usd"] > 0
