import json

import pytest

import threading
import time

from embedfactory.config import Endpoint
from embedfactory.llm import liveness
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
    model = revision_of(RetrievalExample)
    schema = model.model_json_schema()
    assert set(schema["required"]) == {"reason", "revision"}
    nested = schema["$defs"][schema["properties"]["revision"]["$ref"].rsplit("/", 1)[1]]
    assert set(nested["required"]) == {"user_query", "positive_document", "hard_negative_document"}
    good = {"reason": "sharper query", "revision": json.loads(GOOD)}
    assert parse_reply(json.dumps(good), model)[0].revision.user_query == "q"
    missing = {"reason": "r", "revision": {"user_query": "q", "positive_document": "p"}}
    assert "hard_negative_document" in parse_reply(json.dumps(missing), model)[1]  # the example's own fields bind


def _client(url, attempts=3):
    return ChatClient(Endpoint(base_url=url, model="fake", transport_retries=2), url, max_attempts=attempts)


def test_a_bad_reply_is_repaired_with_the_error_shown_back():
    with FakeChatServer(["not json", GOOD]) as server:
        [reply] = _client(server.base_url).run_sync([Request([{"role": "user", "content": "go"}],
                                                             RetrievalExample, seed=1)])
    assert reply.ok and reply.attempts == 2 and reply.calls == 2
    assert reply.prompt_tokens == 20 and reply.completion_tokens == 10 and reply.cached_tokens == 8
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


@pytest.mark.parametrize("refused,mode", [(("json_schema",), "json_object"),
                                           (("json_schema", "json_object"), "none")])
def test_a_server_that_refuses_the_schema_gets_a_weaker_mode_counted(refused, mode):
    with FakeChatServer(refuse_formats=refused) as server:
        client = ChatClient(Endpoint(base_url=server.base_url, model="fake", concurrency=4), server.base_url)
        out = client.run_sync([Request([{"role": "user", "content": str(i)}], ClassificationExample, seed=i)
                               for i in range(8)])
    assert client.mode == mode and all(o.fallback for o in out)  # counted per request (Usage)
    sent = [(r.get("response_format") or {}).get("type", "none") for r in server.requests]
    assert set(sent) == {*refused, mode} and server.counts["refused_format"] == sent.count(refused[0]) + (
        sent.count(refused[1]) if len(refused) > 1 else 0)
    if mode == "json_object":  # the schema travels inline: replies valid at the first attempt
        assert all(o.ok and o.attempts == 1 for o in out) and sent.count(mode) == 8
    else:  # no format: replies are only validated (this fake then sends a bare string) and repaired
        assert all(not o.ok and o.attempts == 3 and o.error.startswith("schema") for o in out)


def test_a_dead_embedded_server_stops_every_request_at_once():
    """The launcher marks the URL dead when its process exits; nothing waits for retries."""
    with FakeChatServer(latency_s=30) as server:
        client = ChatClient(Endpoint(base_url=server.base_url, model="fake", concurrency=4,
                                     transport_retries=4), server.base_url)
        threading.Timer(0.5, liveness.mark_dead,
                        (server.base_url, "the embedded server died: killed by SIGKILL")).start()
        started = time.monotonic()
        try:
            with pytest.raises(liveness.ServerDied, match="SIGKILL"):
                client.run_sync([Request([{"role": "user", "content": str(i)}], ClassificationExample, seed=i)
                                 for i in range(8)])
        finally:
            liveness.clear(server.base_url)
    assert time.monotonic() - started < 5  # the replies were 30 s away


def test_unreachable_endpoint_fails_with_the_url():
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        check_reachable("http://127.0.0.1:9/v1", Endpoint(), timeout_s=2)


def test_a_wrong_model_or_a_missing_key_fails_before_any_request_naming_the_fix(monkeypatch):
    with FakeChatServer(models=("Qwen/Qwen2.5-7B-Instruct", "other")) as server:
        assert check_reachable(server.base_url, Endpoint(model="Qwen/Qwen2.5-7B-Instruct")) == [
            "Qwen/Qwen2.5-7B-Instruct", "other"]
        with pytest.raises(ValueError, match=r"model 'Qwen/Qwen2.5-7B' is not served by http://127.0.0.1:\d+/v1; "
                                             r"it serves: Qwen/Qwen2.5-7B-Instruct, other"):
            check_reachable(server.base_url, Endpoint(model="Qwen/Qwen2.5-7B"))
        assert not server.requests  # no completion was asked for
    with FakeChatServer(require_key="sk-right") as server:
        monkeypatch.delenv("FACTORY_KEY", raising=False)
        endpoint = Endpoint(model="fake", api_key_env="FACTORY_KEY")
        with pytest.raises(PermissionError, match=r"needs an API key: \$FACTORY_KEY is not set"):
            check_reachable(server.base_url, endpoint)
        monkeypatch.setenv("FACTORY_KEY", "sk-wrong")
        with pytest.raises(PermissionError, match=r"the key in \$FACTORY_KEY was refused"):
            check_reachable(server.base_url, endpoint)
        monkeypatch.setenv("FACTORY_KEY", "sk-right")
        assert check_reachable(server.base_url, endpoint) == ["fake"]


def test_brainstorm_schema_holds_the_task_form_and_the_count():
    from embedfactory.schemas import task_list

    model = task_list(2, "Given")
    assert "schema" in parse_reply('{"tasks": ["What is your name?"]}', model)[1]
    three = '{"tasks": ["Given a, find b in c", "Given d, find e in f", "Given g, find h in i"]}'
    assert "schema" in parse_reply(three, model)[1]
    assert parse_reply('{"tasks": ["Given a symptom, find its causes"]}', model)[0] is not None


def test_server_specific_sampling_travels_in_the_body_and_the_embedded_default_is_llama_cpps():
    from embedfactory.config import EMBEDDED_SAMPLING

    with FakeChatServer() as server:
        endpoint = Endpoint(base_url=server.base_url, model="fake", extra_sampling={"repeat_penalty": 1.2})
        ChatClient(endpoint, server.base_url).run_sync([Request([], ClassificationExample, seed=1)])
        ChatClient(Endpoint(base_url=server.base_url, model="fake"), server.base_url).run_sync(
            [Request([], ClassificationExample, seed=2)])
    assert server.requests[0]["repeat_penalty"] == 1.2
    assert "repeat_penalty" not in server.requests[1]  # a remote server gets nothing it did not ask for
    assert Endpoint().sampling_extra() == EMBEDDED_SAMPLING == {"repeat_penalty": 1.1, "top_k": 40, "min_p": 0.05}
    assert Endpoint().fingerprint_fields()["extra_sampling"] == EMBEDDED_SAMPLING  # it shapes the data
