import json

import pytest

from embedfactory.config import Endpoint
from embedfactory.llm.client import ChatClient, Request, check_reachable, parse_reply
from embedfactory.schemas import ClassificationExample, RetrievalExample, revision_of
from fake_llm import FakeChatServer

GOOD = json.dumps({"user_query": "q", "positive_document": "p", "hard_negative_document": "n"})


@pytest.mark.parametrize("raw,finish,reason", [
    ('{"user_query": "q"', "stop", "invalid JSON"),
    ("Sure! Here it is", "stop", "invalid JSON"),
    ('{"user_query": "q", "positive_document": "p"}', "stop", "schema: hard_negative_document"),
    ('{"user_query": " ", "positive_document": "p", "hard_negative_document": "n"}', "stop", "empty string"),
    ('{"user_query": "q", "positive_document": "p", "hard_negative_document": "p"}', "stop", "repeats"),
    (GOOD, "length", "truncated"),
])
def test_malformed_replies_get_a_reason(raw, finish, reason):
    value, error = parse_reply(raw, RetrievalExample, finish)
    assert value is None and reason in error


def test_valid_reply_parses_and_strips():
    value, error = parse_reply('{"input_text": " t ", "label": "a", "misleading_label": "b"}',
                               ClassificationExample)
    assert error is None and value.input_text == "t"


def test_revision_schema_nests_the_example():
    schema = revision_of(RetrievalExample).model_json_schema()
    assert set(schema["required"]) == {"reason", "revision"}


def _client(url, attempts=3):
    return ChatClient(Endpoint(base_url=url, model="fake", transport_retries=2), url, max_attempts=attempts)


def test_a_bad_reply_is_repaired_with_the_error_shown_back():
    with FakeChatServer(["not json", GOOD]) as server:
        [reply] = _client(server.base_url).run_sync([Request([{"role": "user", "content": "go"}],
                                                             RetrievalExample, seed=1)])
    assert reply.ok and reply.attempts == 2 and reply.calls == 2
    assert reply.prompt_tokens == 20 and reply.completion_tokens == 10
    repair = server.requests[1]["messages"]
    assert repair[1] == {"role": "assistant", "content": "not json"} and "invalid JSON" in repair[2]["content"]


def test_after_max_attempts_the_reply_is_rejected_with_the_last_reason():
    with FakeChatServer(["{", "{}", "[]"]) as server:
        [reply] = _client(server.base_url).run_sync([Request([], RetrievalExample, seed=1)])
    assert not reply.ok and reply.attempts == 3 and reply.error.startswith("schema")
    assert len(server.requests) == 3


def test_server_errors_are_retried_by_the_transport_not_counted_as_attempts():
    with FakeChatServer([500, 503, GOOD]) as server:
        [reply] = _client(server.base_url).run_sync([Request([], RetrievalExample, seed=1)])
    assert reply.ok and reply.attempts == 1 and len(server.requests) == 3


def test_replies_come_back_in_request_order_under_concurrency():
    replies = [json.dumps({"input_text": f"t{i}", "label": "a", "misleading_label": "b"}) for i in range(20)]
    with FakeChatServer(replies) as server:
        out = _client(server.base_url).run_sync(
            [Request([{"role": "user", "content": str(i)}], ClassificationExample, seed=i) for i in range(20)])
    by_prompt = {r["messages"][0]["content"]: i for i, r in enumerate(server.requests)}
    assert [o.value.input_text for o in out] == [f"t{by_prompt[str(i)]}" for i in range(20)]


def test_requests_are_in_flight_together_up_to_the_concurrency_limit():
    with FakeChatServer(latency_s=0.3) as server:
        client = ChatClient(Endpoint(base_url=server.base_url, model="fake", concurrency=4), server.base_url)
        out = client.run_sync([Request([{"role": "user", "content": str(i)}], ClassificationExample, seed=i)
                               for i in range(12)])
    assert all(o.ok for o in out)
    assert server.max_in_flight == 4  # never more than the limit, and the limit is reached


def test_unreachable_endpoint_fails_with_the_url():
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        check_reachable("http://127.0.0.1:9/v1", Endpoint(), timeout_s=2)


def test_brainstorm_schema_holds_the_task_form_and_the_count():
    from embedfactory.schemas import task_list

    model = task_list(2, "Given")
    assert "schema" in parse_reply('{"tasks": ["What is your name?"]}', model)[1]
    three = '{"tasks": ["Given a, find b in c", "Given d, find e in f", "Given g, find h in i"]}'
    assert "schema" in parse_reply(three, model)[1]
    assert parse_reply('{"tasks": ["Given a symptom, find its causes"]}', model)[0] is not None
