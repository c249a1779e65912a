"""Prefect global concurrency limits as the LLM client's shared endpoint limits (embedfactory/llm/limits.py):
kept on the Prefect server, so every worker of every flow run calling one endpoint shares them.
Importing this module installs the provider; flows call `ensure_limits` before the first request."""
from __future__ import annotations

import math
from contextlib import asynccontextmanager

from embedfactory.config import Endpoint
from embedfactory.llm import limits


def rate_name(endpoint: Endpoint) -> str:
    return f"{limits.limit_name(endpoint)}-rate"


def ensure_limits(*endpoints: Endpoint | None) -> list[str]:
    """Create or update the limits the endpoints ask for on the Prefect server; their names."""
    from prefect.client.orchestration import get_client

    made, asked = [], {e.model_dump_json(): e for e in endpoints if e is not None and limits.limited(e)}
    if not asked:
        return made
    with get_client(sync_client=True) as client:
        for endpoint in asked.values():
            if endpoint.max_concurrent:
                client.upsert_global_concurrency_limit_by_name(limits.limit_name(endpoint), endpoint.max_concurrent)
                made.append(limits.limit_name(endpoint))
            if endpoint.requests_per_minute:  # a burst of one second's worth, refilled at the rate
                per_second = endpoint.requests_per_minute / 60
                client.upsert_global_concurrency_limit_by_name(rate_name(endpoint), max(1, math.ceil(per_second)),
                                                               slot_decay_per_second=per_second)
                made.append(rate_name(endpoint))
    return made


def prefect_limiter(endpoint: Endpoint) -> limits.Limiter:
    from prefect.concurrency.asyncio import concurrency, rate_limit

    @asynccontextmanager
    async def hold():
        if endpoint.requests_per_minute:
            await rate_limit(rate_name(endpoint), strict=True)
        if endpoint.max_concurrent:
            async with concurrency(limits.limit_name(endpoint), strict=True):
                yield
        else:
            yield

    return hold


limits.use(prefect_limiter)
