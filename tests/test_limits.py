"""Endpoint limits shared by every worker: Prefect global concurrency and rate limits on a real
Prefect API, two clients in two threads standing in for two workers, a fake OpenAI server (with a
delay per reply) counting what was in flight. The same runs without the limits show what they hold back."""
import socket
import threading
import time

import pytest

from embedfactory.config import Endpoint
from embedfactory.llm import limits
from embedfactory.llm.client import ChatClient, Request
from embedfactory.schemas import ClassificationExample
from fake_llm import FakeChatServer
from tasks.limits import ensure_limits, prefect_limiter

pytestmark = pytest.mark.slow


def two_workers(endpoint: Endpoint, url: str, per_worker: int) -> float:
    """Seconds for two clients in two threads to get `per_worker` replies each."""
    def work(worker: int):
        requests = [Request([{"role": "user", "content": f"{worker}-{i}"}], ClassificationExample, seed=i)
                    for i in range(per_worker)]
        replies = ChatClient(endpoint, url, max_attempts=1).run_sync(requests)
        assert all(r.ok for r in replies)

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started


def test_a_global_concurrency_limit_holds_across_workers(prefect_api):
    with FakeChatServer(latency_s=0.3) as server:
        endpoint = Endpoint(base_url=server.base_url, model="fake", concurrency=8, max_concurrent=2)
        assert ensure_limits(endpoint, None) == [f"llm-fake-{socket.gethostname()}-127.0.0.1"]
        two_workers(endpoint, server.base_url, 4)  # the provider is installed: tasks.limits was imported
        assert server.max_in_flight == 2 and len(server.requests) == 8
    # Without it the two workers overlap beyond the limit: more in flight than one worker's 4 (all 8 when
    # both start together; a loaded machine may start one thread late, so the count is not pinned at 8).
    with FakeChatServer(latency_s=1.0) as server:
        two_workers(Endpoint(base_url=server.base_url, model="fake", concurrency=8), server.base_url, 4)
        assert server.max_in_flight > 4


def test_a_global_rate_limit_spaces_the_requests(prefect_api):
    """A bucket of 4 slots refilled at 4 a second: 8 requests span at least (8 - 4) / 4 = 1 s, and no
    stretch of the arrivals holds more than the burst plus what the rate refilled (one slot of slack for
    the server's clock)."""
    with FakeChatServer() as server:
        two_workers(Endpoint(base_url=server.base_url, model="fake"), server.base_url, 4)
        free = sorted(server.arrivals)
    with FakeChatServer() as server:
        endpoint = Endpoint(base_url=server.base_url, model="fake", requests_per_minute=240)  # 4 a second
        assert ensure_limits(endpoint) == [f"llm-fake-{socket.gethostname()}-127.0.0.1-rate"]
        two_workers(endpoint, server.base_url, 4)
        paced = sorted(server.arrivals)

    def crowded(arrivals: list[float]) -> int:
        """The most requests beyond burst + refill in any stretch of arrivals."""
        return max(j - i + 1 - (4 + 4 * (arrivals[j] - arrivals[i]))
                   for i in range(len(arrivals)) for j in range(i, len(arrivals)))

    assert len(paced) == len(free) == 8
    assert paced[-1] - paced[0] >= 0.9 and crowded(paced) <= 1
    assert free[-1] - free[0] < paced[-1] - paced[0]  # the same requests unlimited are not held back


def test_without_a_provider_or_a_limit_nothing_is_held():
    endpoint = Endpoint(base_url="http://127.0.0.1:9/v1", model="m", max_concurrent=3)
    assert limits.limiter_for(Endpoint(base_url="http://127.0.0.1:9/v1", model="m")) is None
    limits.use(None)
    try:
        assert limits.limiter_for(endpoint) is None
    finally:
        limits.use(prefect_limiter)
    assert limits.limiter_for(endpoint) is not None
    assert limits.limit_name(Endpoint(base_url="https://api.openai.com/v1", model="openai/gpt-4o")) == \
        "llm-openai-gpt-4o-api.openai.com"
