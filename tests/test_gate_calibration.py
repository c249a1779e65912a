"""The grounded gates are calibrated on real queries (synth/calibration.py, bench/gate_calibration.py):
Cranfield's and CISI's own queries, each judged as if written for each of its relevant documents,
pass all gates but for at most 5%; clearly bad grounded queries still fail their gate."""
import pytest

from embedfactory import prompts
from embedfactory.config import GroundedConfig
from embedfactory.eval import sets as evalsets
from embedfactory.filter import gates
from embedfactory.synth import calibration, grounded

MAX_SHARE = 0.05


@pytest.fixture(scope="module")
def sets():
    return {name: evalsets.load(evalsets.SHIPPED[name]) for name in ("cranfield", "cisi")}


@pytest.mark.parametrize("name", ["cranfield", "cisi"])
def test_real_queries_pass_the_grounded_gates(sets, name):
    result = calibration.real_query_rejects(sets[name])
    assert result.pairs > 1000 and result.queries == len(sets[name].queries)
    assert result.share <= MAX_SHARE, (result.per_gate, result.examples)
    assert result.query_share <= MAX_SHARE, (result.per_gate, result.examples)
    for gate in gates.QUERY_GATES:
        assert result.gate_share(gate) <= MAX_SHARE, (gate, result.examples.get(gate))


def test_the_measure_sees_a_miscalibrated_length_ask(sets):
    """E5's web-search length mix, which grounded queries were asked before, rejects many real queries."""
    e5 = lambda doc_id, index, seed: {**grounded.draw_attributes(doc_id, index, seed),  # noqa: E731
                                      "query_length": "less than 5 words"}
    result = calibration.real_query_rejects(sets["cranfield"], draw=e5)
    assert result.per_gate["length"] / result.pairs > 0.5 and result.share > 0.5


def test_grounded_draws_ask_no_word_count():
    draws = [grounded.draw_attributes(f"d{i}", 0, 0) for i in range(50)]
    assert all(set(d) == {"query_type", "clarity", "difficulty"} for d in draws)
    assert "words" not in prompts.messages(grounded.PROMPT, passage="p", instruction="", persona=None,
                                           **draws[0])[1]["content"]


def test_clearly_bad_grounded_queries_still_fail(sets):
    data = sets["cranfield"]
    doc_id = next(d for d in data.qrels["1"] if len(data.corpus[d].split()) >= 60)
    passage = data.corpus[doc_id]
    asked = gates.Asked(prompts.fixed_part(grounded.PROMPT), GroundedConfig().instruction,
                        grounded.draw_attributes(doc_id, 0, 0))

    def gate(query: str) -> str | None:
        reason = gates.check_query(query, passage, None, asked)
        return reason and reason.split(":")[0]

    assert gate(data.queries["1"]) is None  # the real question passes
    assert gate(" ".join(passage.split()[10:50])) == "gate copy"  # a 40-word verbatim span
    assert gate(" ".join(passage.split()[20:32])) == "gate copy"  # a 12-word one
    assert gate("flutter flutter flutter flutter") == "gate degenerate"
    assert gate("what is the the the the effect of heating") == "gate degenerate"
    assert gate("") == "gate degenerate" and gate("N/A") == "gate degenerate"
    assert gate("Given a question, retrieve passages that answer it") == "gate echo"
    assert gate("Write one search query that a person would type") == "gate echo"
    assert gate("what is this passage about") == "gate echo"
    assert gate("models") == "gate length" and gate("heated models") == "gate length"
    assert gate("aeroelastic " * 200 + "models") == "gate degenerate"


def test_query_length_without_an_ask():
    lo, hi = gates.QUERY_WORDS
    assert gates.query_length("word " * lo) is None and gates.query_length("word " * hi) is None
    assert gates.query_length("word " * (lo - 1)).startswith(f"has {lo - 1} words")
    assert gates.query_length("word " * (hi + 1))
    asked = gates.Asked("", "", {"query_length": "less than 5 words"})  # a row drawn with a length ask
    assert gates.check_query("a question of exactly ten words about heated aircraft models",
                             "p", None, asked).startswith("gate length: ")
