import json

from fake_llm import FakeChatServer

from embedfactory.config import Endpoint
from embedfactory.llm.client import ChatClient
from embedfactory.synth.personas import expand_personas
from embedfactory.synth.sources import seed_personas


def personas(*texts):
    return json.dumps({"personas": list(texts)})


def test_expansion_removes_duplicates_and_seed_copies_and_asks_again_for_the_rest():
    script = [
        personas("A cook who bakes bread daily", "A  Cook who bakes bread, daily!"),  # near-identical
        personas(seed_personas()[1]),                                             # a seed copied
        "not json", "{}", "[]",                                                   # rejected after 3 tries
        personas("A pilot who flies cargo at night", "A poet who writes about rivers"),
    ]
    with FakeChatServer(script) as server:
        client = ChatClient(Endpoint(base_url=server.base_url, model="fake", concurrency=1), server.base_url)
        out = expand_personas(client, count=3, seed=0)
    kept = [r["persona"] for r in out.rows if r["status"] == "ok"]
    assert kept == ["A cook who bakes bread daily", "A pilot who flies cargo at night",
                    "A poet who writes about rivers"]
    assert out.rejected == 1 and out.extra["duplicates_removed"] == 2
    assert out.usage.calls == len(server.requests) == 6


def test_a_persona_that_restates_the_prompt_is_kept_as_a_rejected_row_and_asked_for_again():
    script = [
        # a real reply of the embedded model: the persona restates the prompt instead of describing someone
        personas("An elderly woman whose life could touch this person's work…", "A cook who bakes bread daily"),
        personas("A pilot who flies cargo at night"),
    ]
    with FakeChatServer(script) as server:
        client = ChatClient(Endpoint(base_url=server.base_url, model="fake", concurrency=1), server.base_url)
        out = expand_personas(client, count=2, seed=0)
    kept = [r["persona"] for r in out.rows if r["status"] == "ok"]
    [gated] = [r for r in out.rows if r["status"] == "rejected"]
    assert kept == ["A cook who bakes bread daily", "A pilot who flies cargo at night"]
    assert gated["persona"].startswith("An elderly woman") and gated["reject_reason"].startswith("gate echo")
    assert gated["raw_response"] and out.extra["reasons"] == {"gate": {"echo": 1}}
