"""The teacher picks the best and the worst of the junior's candidates (SPEED's preference data)."""
from __future__ import annotations

import functools
import json

from pydantic import BaseModel, Field, model_validator

from .. import prompts
from ..ids import seed_of
from ..llm.client import ChatClient, Request
from ..stages.common import ShardOutput, exchange, usage_of

PROMPT = "judge_candidates"


@functools.cache
def preference_for(n: int) -> type[BaseModel]:
    """The reply schema for n answers: indices in range (the schema says so, so constrained decoding
    obeys it) and best != worst (checked on parse, so the client asks again with the error)."""

    class Preference(BaseModel):
        best: int = Field(ge=0, lt=n)
        worst: int = Field(ge=0, lt=n)
        reason: str

        @model_validator(mode="after")
        def _different(self):
            if self.best == self.worst:
                raise ValueError("best and worst must be different answers")
            return self

    return Preference


def judge_candidates(client: ChatClient, rows: list[dict], seed: int, progress=None) -> ShardOutput:
    """rows: example_id, messages (the prompt), candidates. Out: prompt/chosen/rejected rows; a reply
    that never names two different answers in range is kept as rejected with the reason."""
    requests = [Request(messages=[{"role": "user", "content": prompts.render(
        PROMPT, instruction="\n\n".join(m["content"] for m in r["messages"]), candidates=r["candidates"])}],
        output=preference_for(len(r["candidates"])), seed=seed_of(seed, "judge", r["example_id"])) for r in rows]
    replies = client.run_sync(requests, progress)
    out = []
    for row, reply in zip(rows, replies):
        pick = reply.value
        out.append({**exchange(reply, client.endpoint.model, PROMPT),  # status, reject_reason, cost
                    "example_id": row["example_id"], "prompt": json.dumps(row["messages"]),
                    "chosen": row["candidates"][pick.best] if reply.ok else None,
                    "rejected": row["candidates"][pick.worst] if reply.ok else None,
                    "reason": pick.reason if reply.ok else None})
    return ShardOutput(rows=out, rows_in=len(rows), usage=usage_of(replies))
