"""Revisor (SPEED): the LLM judges each example for relevance, completeness and accuracy and
returns a reason and a revision. The original is kept beside the revision; when the revisor's reply
never parses, the original stays in use and the row records the rejection."""
from __future__ import annotations

import json

from .. import prompts
from ..ids import seed_of
from ..llm.client import ChatClient, Request
from ..schemas import revision_of
from ..task_types import TASK_SPECS
from .common import ShardOutput, exchange, usage_of

PROMPT = "revise"


def revise_examples(client: ChatClient, examples: list[dict], seed: int, progress=None) -> ShardOutput:
    requests = [Request(
        messages=prompts.messages(PROMPT, task_type=e["task_type"], task=e["task"], example=e["fields"]),
        output=revision_of(TASK_SPECS[e["task_type"]].output),
        seed=seed_of(seed, "revise", e["example_id"])) for e in examples]
    replies = client.run_sync(requests, progress)
    rows = []
    for example, reply in zip(examples, replies):
        row = {**example, **exchange(reply, client.endpoint.model, PROMPT),
               "original_fields": example["fields"], "status": "ok"}
        if reply.ok:
            revision = reply.value.revision
            row["anchor"], row["positive"], row["negative"] = TASK_SPECS[example["task_type"]].columns(revision)
            row["fields"] = revision.model_dump_json()
            changed = revision.model_dump() != _parsed(example["fields"])
            row["revision_status"] = "revised" if changed else "unchanged"
            row["revision_reason"] = reply.value.reason
        else:
            row["revision_status"] = "rejected"
            row["revision_reason"] = None
        rows.append(row)
    return ShardOutput(rows=rows, rows_in=len(examples), usage=usage_of(replies),
                       failed_revisions=sum(not r.ok for r in replies))


def _parsed(text: str):
    """The original as JSON when it is JSON (a generated example), else the text (a raw model answer)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def skip_revision(examples: list[dict]) -> ShardOutput:
    """The revised stage when the revisor is switched off: every example passes unchanged."""
    rows = [{**e, "original_fields": e["fields"], "revision_status": "skipped", "revision_reason": None}
            for e in examples]
    return ShardOutput(rows=rows, rows_in=len(examples))
