"""Rows for the alignment stages, rebuilt from what the synthesis stages stored.

The teacher's seed set is an ordinary synthesis run (personas -> tasks -> examples) with the teacher
as generator; its prompts are re-rendered from the task rows (the attribute draws are reproducible),
so SFT sees exactly the prompt the teacher answered."""
from __future__ import annotations

import json

from ..config import SynthConfig
from ..ids import stable_hash
from ..schemas import revision_of
from ..synth.generate import example_requests
from ..synth.revise import revise_messages
from ..task_types import TASK_SPECS


def seed_prompts(tasks: list[dict], examples: list[dict], synth: SynthConfig,
                 max_words: int | None) -> list[dict]:
    """One row per valid teacher example: its task, the user message that asked for it, the reply.
    `max_words`: the length cap the seed set was generated with (`SynthConfig.max_num_words`)."""
    jobs, requests = example_requests(tasks, synth.examples_per_task, synth.seed, max_words,
                                      synth.languages)
    asked = {stable_hash("example", task["task_id"], index, attributes): request.messages
             for (task, index, attributes, _), request in zip(jobs, requests)}
    return [{"example_id": e["example_id"], "task_type": e["task_type"], "task": e["task"],
             "messages": asked[e["example_id"]], "output": e["fields"]}
            for e in examples if e["fields"] and e["example_id"] in asked]


def chat(messages: list[dict], reply: str) -> dict:
    """An SFT row in trl's prompt-completion form: the loss falls on the reply only."""
    return {"prompt": messages, "completion": [{"role": "assistant", "content": reply}]}


def revisor_rows(judged: list[dict]) -> list[dict]:
    """(prompt, task, junior output) -> the teacher's reason and revision, as the revisor replies."""
    return [chat(revise_messages(r, r["original_fields"]),
                 revision_of(TASK_SPECS[r["task_type"]].output).model_validate(
                     {"reason": r["revision_reason"], "revision": json.loads(r["fields"])}).model_dump_json())
            for r in judged if r["revision_status"] in ("revised", "unchanged")]
