"""Grounded synthesis: queries written for passages of the user's own corpus.

For each sampled passage the generator writes queries conditioned on E5's query attributes (type,
clarity, difficulty), drawn per query from the same distributions as brainstormed retrieval
examples, and optionally on a persona and a task instruction. No word count is asked: E5's web-search
length mix ("less than 5 words" in 40% of draws) does not fit questions about passages, which run
from 4 to 345 words in Cranfield and CISI; the length gate checks gates.QUERY_WORDS instead
(calibration.py measures the gates on real queries). The passage ("title text") is the
positive; its id is kept as `source_id`. The rows have the revised stage's columns (revision
skipped), so the verdict stage gates, filters and mines them like any other example; its
round-trip test searches the whole corpus, where the passage must come back in the top k.
"""
from __future__ import annotations

import json
import random

from .. import prompts
from ..ids import seed_of, stable_hash
from ..llm.client import ChatClient, Request
from ..schemas import GroundedQuery
from ..task_types import CLARITY, DIFFICULTY, QUERY_TYPE, Draw
from .common import ShardOutput, exchange, usage_of
from .documents import Passage

PROMPT = "grounded_query"
TASK_TYPE = "retrieval"


def draw_attributes(passage_id: str, index: int, seed: int) -> dict:
    d = Draw(random.Random(seed_of(seed, "grounded", passage_id, index)), 0, ["English"])
    return {"query_type": d.pick(QUERY_TYPE), "clarity": d.pick(CLARITY), "difficulty": d.pick(DIFFICULTY)}


def query_requests(passages: list[Passage], per_passage: int, seed: int, instruction: str,
                   personas: list[dict] = (), prompt=PROMPT) -> tuple[list[tuple], list[Request]]:
    """One prompt per passage and query index; a persona (cycled by a seeded draw) when given.
    `prompt`: the shipped template's name, or a compiled variant (`prompts.compile_source`)."""
    jobs = []
    for passage in passages:
        for index in range(per_passage):
            attributes = draw_attributes(passage.id, index, seed)
            persona = (random.Random(seed_of(seed, "grounded-persona", passage.id, index)).choice(personas)
                       if personas else None)
            jobs.append((passage, index, attributes, persona))
    requests = [Request(
        messages=prompts.messages(prompt, passage=p.text, instruction=instruction,
                                  persona=persona["persona"] if persona else None, **attrs),
        output=GroundedQuery, seed=seed_of(seed, "grounded-query", p.id, i))
        for p, i, attrs, persona in jobs]
    return jobs, requests


def generate_queries(client: ChatClient, passages: list[Passage], per_passage: int, seed: int,
                     instruction: str, personas: list[dict] = (), progress=None) -> ShardOutput:
    jobs, requests = query_requests(passages, per_passage, seed, instruction, personas)
    replies = client.run_sync(requests, progress)
    task_id = stable_hash("grounded-task", instruction, length=16)
    rows = []
    for (passage, index, attributes, persona), reply in zip(jobs, replies):
        fields = reply.value.model_dump_json() if reply.ok else None
        rows.append({
            "persona_id": persona["persona_id"] if persona else None, "task_id": task_id,
            "example_id": stable_hash("grounded", passage.id, index, attributes),
            "source_id": passage.id, "task_type": TASK_TYPE, "task": instruction,
            "attributes": json.dumps({**attributes, "title": passage.title}, sort_keys=True),
            "anchor": reply.value.query if reply.ok else None, "positive": passage.text, "negative": None,
            "fields": fields, "original_fields": fields, "revision_status": "skipped",
            "revision_reason": None, **exchange(reply, client.endpoint.model, PROMPT),
        })
    return ShardOutput(rows=rows, rows_in=len(passages), usage=usage_of(replies))
