"""The teacher picks the best and the worst of the junior's candidates (SPEED's preference data)."""
from __future__ import annotations

import functools
import json

from pydantic import BaseModel, Field, model_validator

from .. import prompts
from ..ids import seed_of
from ..llm.client import ChatClient, Request
from ..synth.common import ShardOutput, exchange, no_exchange, usage_of

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


SAME_ANSWERS = "the junior's samples are all one answer: no preference to learn (not sent to the teacher)"


def judge_candidates(client: ChatClient, rows: list[dict], seed: int, progress=None) -> ShardOutput:
    """rows: example_id, messages (the prompt), candidates. Out: prompt/chosen/rejected rows; a reply
    that never names two different answers in range is kept as rejected with the reason. Repeated
    candidates are shown once; a prompt with fewer than two different ones costs no call and is kept
    as rejected (a pair of equal answers gives DPO nothing but a zero gradient)."""
    distinct = [list(dict.fromkeys(r["candidates"])) for r in rows]
    asked = [i for i, c in enumerate(distinct) if len(c) >= 2]
    requests = [Request(messages=[{"role": "user", "content": prompts.render(
        PROMPT, instruction="\n\n".join(m["content"] for m in rows[i]["messages"]), candidates=distinct[i])}],
        output=preference_for(len(distinct[i])), seed=seed_of(seed, "judge", rows[i]["example_id"])) for i in asked]
    replies = dict(zip(asked, client.run_sync(requests, progress)))
    out = []
    for i, row in enumerate(rows):
        base = {"example_id": row["example_id"], "prompt": json.dumps(row["messages"])}
        if (reply := replies.get(i)) is None:
            out.append({**no_exchange(), "status": "rejected", "reject_reason": SAME_ANSWERS, **base,
                        "chosen": None, "rejected": None, "reason": None})
            continue
        pick = reply.value
        out.append({**exchange(reply, client.endpoint.model, PROMPT), **base,  # status, reject_reason, cost
                    "chosen": distinct[i][pick.best] if reply.ok else None,
                    "rejected": distinct[i][pick.worst] if reply.ok else None,
                    "reason": pick.reason if reply.ok else None})
    return ShardOutput(rows=out, rows_in=len(rows), usage=usage_of(list(replies.values())))
