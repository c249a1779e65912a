"""What every LLM stage shares: its shard output and the exchange columns of a row."""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import prompts
from ..llm.client import Reply, Usage


@dataclass
class ShardOutput:
    rows: list[dict]
    rows_in: int
    usage: Usage = field(default_factory=Usage)
    dropped: int = 0
    failed_revisions: int = 0  # revisor replies that never parsed (their originals pass on)
    extra: dict = field(default_factory=dict)

    @property
    def passed(self) -> int:
        """Rows the next stage reads: valid ones that no filter dropped."""
        return sum(r.get("status", "ok") == "ok" for r in self.rows) - self.dropped

    @property
    def rejected(self) -> int:
        """Replies of this stage that never parsed."""
        return sum(r.get("status") == "rejected" for r in self.rows) + self.failed_revisions


def exchange(reply: Reply, model: str, prompt_name: str) -> dict:
    """The EXCHANGE columns (schemas.py) for a row made from `reply`."""
    return {
        "status": "ok" if reply.ok else "rejected",
        "reject_reason": reply.error if not reply.ok else None,
        "model": model,
        "prompt_name": prompt_name,
        "prompt_version": prompts.version(prompt_name),
        "raw_response": reply.raw,
        "attempts": reply.attempts,
        "llm_calls": reply.calls,
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
    }


def no_exchange() -> dict:
    """The EXCHANGE columns of a row made without an LLM call."""
    return {"status": "ok", "reject_reason": None, "model": None, "prompt_name": None,
            "prompt_version": None, "raw_response": None, "attempts": 0, "llm_calls": 0,
            "prompt_tokens": 0, "completion_tokens": 0}


def usage_of(replies: list[Reply]) -> Usage:
    usage = Usage()
    for reply in replies:
        usage.add(reply)
    return usage
