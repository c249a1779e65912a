"""Flow align's preference data: the junior samples on seed prompts it was not trained on, and a
prompt whose samples are all one answer costs no teacher call and gives no (useless) DPO pair."""
import json

import pytest

from embedfactory.align import judge, run
from embedfactory.config import Endpoint
from embedfactory.llm.client import ChatClient
from fake_llm import FakeChatServer


def seed(n: int) -> list[dict]:
    return [{"example_id": f"e{i}", "messages": [{"role": "user", "content": f"prompt {i}"}], "output": "{}"}
            for i in range(n)]


def test_the_junior_learns_from_some_seed_prompts_and_samples_on_the_others():
    learned, held = run.split_seed(seed(10), 0.5)
    assert len(learned) == len(held) == 5
    assert not {r["example_id"] for r in learned} & {r["example_id"] for r in held}
    assert run.split_seed(seed(10), 0.5) == (learned, held)  # the same split on every rerun
    assert [len(part) for part in run.split_seed(seed(2), 0.9)] == [1, 1]  # at least one each way
    assert [len(part) for part in run.split_seed(seed(4), 0.25)] == [3, 1]
    with pytest.raises(ValueError, match="1 valid example"):
        run.split_seed(seed(1), 0.5)


def test_identical_candidates_are_not_sent_to_the_teacher_and_repeats_are_shown_once():
    rows = [{"example_id": "same", "messages": [{"role": "user", "content": "write"}], "candidates": ["a"] * 4},
            {"example_id": "two", "messages": [{"role": "user", "content": "write"}],
             "candidates": ['{"q": "x"}', '{"q": "x"}', '{"q": "y"}']}]
    with FakeChatServer(['{"best": 1, "worst": 0, "reason": "y is better"}']) as server:
        out = judge.judge_candidates(ChatClient(Endpoint(base_url=server.base_url, model="fake"), server.base_url),
                                     rows, seed=0)
    assert len(server.requests) == 1  # only the prompt with two different answers
    shown = server.requests[0]["messages"][0]["content"]
    assert shown.count('{"q": "x"}') == 1 and '{"q": "y"}' in shown
    same, two = out.rows
    assert (same["status"], same["reject_reason"], same["llm_calls"]) == ("rejected", judge.SAME_ANSWERS, 0)
    assert (two["status"], two["chosen"], two["rejected"]) == ("ok", '{"q": "y"}', '{"q": "x"}')
    assert json.loads(two["prompt"]) == rows[1]["messages"] and out.usage.calls == 1
