"""Example generation (E5 step 2): one JSON example per task and draw of randomized attributes."""
from __future__ import annotations

import json
import random

from .. import prompts
from ..ids import seed_of, stable_hash
from ..llm.client import ChatClient, Request
from ..task_types import TASK_SPECS, Draw, draw_attributes_for
from .common import ShardOutput, exchange, usage_of


def draw_attributes(task: dict, index: int, seed: int, max_words: int | None,
                    languages: list[str] = ("English",)) -> tuple[dict, list[int]]:
    """Attributes and guideline order for the index-th example of a task, reproducible by lineage.
    `max_words`: the run's cap on length asks (None: the reference values as they are)."""
    spec = TASK_SPECS[task["task_type"]]
    rng = random.Random(seed_of(seed, "attributes", task["task_id"], index))
    attributes = draw_attributes_for(task["task_type"], Draw(rng, max_words, list(languages)))
    order = list(range(spec.guidelines))
    rng.shuffle(order)
    return attributes, order


def example_requests(tasks: list[dict], per_task: int, seed: int, max_words: int | None,
                     languages: list[str]) -> tuple[list[tuple], list[Request]]:
    """The generation prompts: one per task and example index, with its attribute draw."""
    jobs = []
    for task in tasks:
        for index in range(per_task):
            attributes, order = draw_attributes(task, index, seed, max_words, languages)
            jobs.append((task, index, attributes, order))
    requests = [Request(
        messages=prompts.messages(TASK_SPECS[t["task_type"]].generate_prompt, task=t["task"], order=order,
                                  topic=t.get("topic"), **attrs),
        output=TASK_SPECS[t["task_type"]].output,
        seed=seed_of(seed, "examples", t["task_id"], i)) for t, i, attrs, order in jobs]
    return jobs, requests


def generate_examples(client: ChatClient, tasks: list[dict], per_task: int, seed: int,
                      max_words: int | None, languages: list[str], progress=None) -> ShardOutput:
    jobs, requests = example_requests(tasks, per_task, seed, max_words, languages)
    replies = client.run_sync(requests, progress)
    rows = []
    for (task, index, attributes, _), reply in zip(jobs, replies):
        spec = TASK_SPECS[task["task_type"]]
        anchor, positive, negative = spec.columns(reply.value) if reply.ok else (None, None, None)
        rows.append({
            "persona_id": task["persona_id"], "task_id": task["task_id"],
            "example_id": stable_hash("example", task["task_id"], index, attributes),
            "task_type": task["task_type"], "task": task["task"],
            "attributes": json.dumps(attributes, sort_keys=True),
            "anchor": anchor, "positive": positive, "negative": negative,
            "fields": reply.value.model_dump_json() if reply.ok else None,
            **exchange(reply, client.endpoint.model, spec.generate_prompt),
        })
    return ShardOutput(rows=rows, rows_in=len(tasks), usage=usage_of(replies))
