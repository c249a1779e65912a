"""One bad request never sinks a shard, and no paid reply is thrown away (fault injection with the
fake OpenAI server): a request the server refuses for what it is becomes a rejected reply with the
reason; a shard that fails part way keeps the replies it paid for in its reply log, and its rerun
asks only for the rest."""
import openai
import pytest
from fake_llm import FakeChatServer
from test_client import GOOD

from embedfactory.config import Endpoint
from embedfactory.llm import replylog
from embedfactory.llm.client import ChatClient, Request
from embedfactory.schemas import RetrievalExample
from embedfactory.store import Store


def requests(n: int) -> list[Request]:
    return [Request([{"role": "user", "content": f"prompt {i}"}], RetrievalExample, seed=i) for i in range(n)]


def client(url: str) -> ChatClient:
    return ChatClient(Endpoint(base_url=url, model="fake", concurrency=1, transport_retries=1), url)


def test_a_request_too_long_for_the_context_is_a_rejected_reply_and_the_rest_go_on():
    too_long = (400, "This model's maximum context length is 2048 tokens. However, you requested 3100 tokens.")
    with FakeChatServer([GOOD, too_long, (422, "Unprocessable: bad value"), GOOD]) as server:
        c = client(server.base_url)
        replies = c.run_sync(requests(4))
    assert [r.ok for r in replies] == [True, False, False, True]
    assert replies[1].error == ("refused by the server: HTTP 400: This model's maximum context length is 2048 "
                                "tokens. However, you requested 3100 tokens.")
    assert replies[2].error == "refused by the server: HTTP 422: Unprocessable: bad value"
    assert c.mode == "json_schema"  # a context overflow is not a format refusal: the mode stays
    assert len(server.requests) == 4  # asked once each: asking again would get the same answer


def test_a_shard_that_fails_part_way_keeps_what_it_paid_for_and_its_rerun_asks_only_for_the_rest(tmp_path):
    store = Store(str(tmp_path))
    folder = store.path("runs", "r", "examples", "_replies", "00000")
    with FakeChatServer([GOOD, GOOD, GOOD] + [500] * 10) as server:  # the server goes bad after 3 replies
        with pytest.raises(openai.InternalServerError), replylog.active(replylog.ReplyLog(store, folder)):
            client(server.base_url).run_sync(requests(6))
    assert len(store.list(folder)) >= 1  # flushed on the way out of the failed try
    with FakeChatServer() as server:  # the rerun, against a healthy server
        log = replylog.ReplyLog(store, folder)
        with replylog.active(log):
            replies = client(server.base_url).run_sync(requests(6))
    assert all(r.ok for r in replies) and log.reused == 3
    assert [m["messages"][0]["content"] for m in server.requests] == ["prompt 3", "prompt 4", "prompt 5"]
    assert sum(r.calls for r in replies) == 6  # the 3 replies paid in the failed try are counted, once
    log.clear()
    assert store.list(folder) == []


def test_prefect_retries_only_what_may_pass_next_time():
    from types import SimpleNamespace

    from embedfactory.llm.costs import BudgetExceeded
    from embedfactory.llm.liveness import ServerDied
    from tasks.common import worth_retrying

    def retried(exc) -> bool:
        return worth_retrying(None, None, SimpleNamespace(data=exc))

    assert not any(retried(e) for e in (ValueError("bad template"), KeyError("query"), FileNotFoundError("x"),
                                        BudgetExceeded("spent"), ServerDied("gone")))
    assert all(retried(e) for e in (ConnectionError("refused"), TimeoutError(), RuntimeError("pool run crashed"),
                                    OSError("S3 503")))


def test_an_align_stage_that_fails_part_way_keeps_the_teachers_replies_for_its_rerun(tmp_path):
    from types import SimpleNamespace

    from embedfactory.align import run
    from embedfactory.store import StageDir
    from embedfactory.synth.common import ShardOutput

    store = Store(str(tmp_path))
    ctx = SimpleNamespace(run_token="t", run_id="align-1", params=SimpleNamespace(budget_usd=None),
                          stage_dir=lambda name: StageDir(store, "align-1", name))

    def produce(url: str):
        def rows() -> ShardOutput:
            replies = client(url).run_sync(requests(6))
            return ShardOutput(rows=[{"ok": r.ok} for r in replies], rows_in=6)
        return rows

    folder = store.path("runs", "align-1", "preferences", "_replies", "00000")
    with FakeChatServer([GOOD, GOOD, GOOD] + [500] * 10) as server, pytest.raises(openai.InternalServerError):
        run._stage(ctx, "preferences", ("teacher",), produce(server.base_url))
    assert store.list(folder)  # the failed try's paid replies
    with FakeChatServer() as server:
        record = run._stage(ctx, "preferences", ("teacher",), produce(server.base_url))
    assert len(server.requests) == 3 and record.rows == 6  # the rerun asked only for the 3 never answered
    assert store.list(folder) == []  # committed: the rows hold the replies now


def test_the_reply_log_writes_slow_replies_at_once_and_batches_fast_ones(tmp_path, monkeypatch):
    """What a kill (no `finally`, no flush) loses: fast replies wait for a batch of 8, at most 5 s; a reply
    that comes after a quiet 5 s is written as it comes."""
    clock = [1000.0]
    monkeypatch.setattr(replylog.time, "monotonic", lambda: clock[0])
    store = Store(str(tmp_path))
    folder = store.path("runs", "r", "examples", "_replies", "00000")
    log = replylog.ReplyLog(store, folder)
    for i in range(replylog.FLUSH_EVERY - 1):  # a fast server: 7 replies within a second
        clock[0] += 0.1
        log.put(f"k{i}", {"raw": str(i)})
    assert not store.exists(folder) or store.list(folder) == []
    clock[0] += 0.1
    log.put("k7", {"raw": "7"})  # the 8th: one object with all 8
    assert len(store.list(folder)) == 1
    clock[0] += replylog.FLUSH_SECONDS  # a slow server: the next reply comes 5 s later
    log.put("k8", {"raw": "8"})
    assert len(store.list(folder)) == 2 and log.pending == []
    killed = replylog.ReplyLog(store, folder)  # what a rerun after a kill finds, without any flush
    assert sorted(killed.entries) == [f"k{i}" for i in range(9)]
