"""Revisor (SPEED): the LLM judges each example for relevance, completeness and accuracy against
its task, type and the attributes it was generated with (query type, lengths, difficulty...) and
returns a reason and a revision. The original is kept beside the revision; when the revisor's reply
never parses, the original stays in use and the row records the rejection. A revision replaces the
original only if it passes the quality gates (filter/gates.py); otherwise the original stays in use and the
row says which gate the revision failed ("kept-original"). The verdict stage applies the second test
of acceptance, which needs the corpus: a revision whose positive ranks lower than the original's
gives way to it (verdicts.py)."""
from __future__ import annotations

import json

from .. import prompts
from ..filter import gates
from ..ids import seed_of
from ..llm.client import ChatClient, Request
from ..schemas import revision_of
from ..task_types import TASK_SPECS
from .common import ShardOutput, exchange, usage_of

PROMPT = "revise"


def revise_examples(client: ChatClient, examples: list[dict], seed: int, progress=None,
                    gate: bool = True) -> ShardOutput:
    """`gate=False` takes every parsed revision as it is (flow `align` trains the revisor on the
    teacher's revisions; the gates judge the factory's product)."""
    requests = [Request(
        messages=revise_messages(e, e["fields"]),
        output=revision_of(TASK_SPECS[e["task_type"]].output),
        seed=seed_of(seed, "revise", e["example_id"])) for e in examples]
    replies = client.run_sync(requests, progress)
    rows = []
    for example, reply in zip(examples, replies):
        row = {**example, **exchange(reply, client.endpoint.model, PROMPT),
               "original_fields": example["fields"], "status": "ok"}
        failed = _gate(example, reply.value.revision) if reply.ok and gate else None
        if failed:
            row["revision_status"] = "kept-original"
            row["revision_reason"] = failed
        elif reply.ok:
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


def revise_messages(example: dict, fields: str) -> list[dict]:
    """The revisor's prompt for an example row and its fields (JSON): task, type and the attributes
    it was generated with. Flow `align` trains the revisor on the same prompt."""
    return prompts.messages(PROMPT, task_type=example["task_type"], task=example["task"], example=fields,
                            attributes=json.loads(example.get("attributes") or "{}"))


def _gate(example: dict, revision) -> str | None:
    """The first quality gate a changed revision fails, as 'gate <name>: ...'; None if it passes."""
    fields = revision.model_dump()
    if fields == _parsed(example["fields"]):
        return None  # nothing to replace
    spec = TASK_SPECS[example["task_type"]]
    asked = gates.Asked(prompts.fixed_part(spec.generate_prompt), example["task"],
                        json.loads(example.get("attributes") or "{}"))
    return gates.check(example["task_type"], fields, asked)


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
