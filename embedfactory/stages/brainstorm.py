"""Task brainstorm (E5 step 1, KaLM personas, SPEED topics): each persona gets its share of the task
mix; for each brainstormed type the LLM proposes tasks while speaking as that persona (the persona
is the system prompt), `per_topic` tasks per prompt, each prompt inside its own sampled topic.
Types without a brainstorm step (STS, bitext) get their fixed task, with no call."""
from __future__ import annotations

import random
from collections import Counter

from .. import prompts
from ..ids import seed_of, stable_hash
from ..llm.client import ChatClient, Request
from ..schemas import task_list
from ..task_types import TASK_SPECS
from .common import ShardOutput, exchange, no_exchange, usage_of


def assign_task_types(personas: int, per_persona: int, mix: dict[str, float], seed: int) -> list[list[str]]:
    """Task types for each persona: counts follow `mix` exactly (largest remainder), spread at random."""
    total, weight = personas * per_persona, sum(mix.values())
    quotas = {t: total * w / weight for t, w in mix.items()}
    counts = {t: int(q) for t, q in quotas.items()}
    by_remainder = sorted(mix, key=lambda t: (counts[t] - quotas[t], list(mix).index(t)))
    for t in by_remainder[:total - sum(counts.values())]:
        counts[t] += 1
    flat = [t for t, n in counts.items() for _ in range(n)]
    random.Random(seed_of(seed, "task-mix")).shuffle(flat)
    return [flat[i * per_persona:(i + 1) * per_persona] for i in range(personas)]


def brainstorm_tasks(client: ChatClient, personas: list[dict], types: list[list[str]], seed: int,
                     topics: list[str] | None = None, per_topic: int = 1, progress=None) -> ShardOutput:
    """`types[i]` lists the task types persona i gets (see `assign_task_types`)."""
    rows, jobs = [], []  # a job: (persona, task type, topic, how many tasks)
    for persona, wanted in zip(personas, types):
        for task_type, count in Counter(wanted).items():
            spec = TASK_SPECS[task_type]
            if spec.fixed_task is not None:
                rows += [_row(persona, task_type, None, spec.fixed_task, i, no_exchange()) for i in range(count)]
                continue
            for j, start in enumerate(range(0, count, per_topic)):
                rng = random.Random(seed_of(seed, "topic", persona["persona_id"], task_type, j))
                jobs.append((persona, task_type, rng.choice(topics) if topics else None,
                             min(per_topic, count - start)))
    requests = [Request(messages=_messages(p, t, topic, n), output=task_list(n, TASK_SPECS[t].task_prefix),
                        seed=seed_of(seed, "tasks", p["persona_id"], t, i))
                for i, (p, t, topic, n) in enumerate(jobs)]
    replies = client.run_sync(requests, progress)
    for (persona, task_type, topic, _), reply in zip(jobs, replies):
        meta = exchange(reply, client.endpoint.model, TASK_SPECS[task_type].brainstorm_prompt)
        if not reply.ok:
            rows.append(_row(persona, task_type, topic, None, 0, meta))
            continue
        for i, task in enumerate(dict.fromkeys(reply.value.tasks)):  # exact repeats dropped
            rows.append(_row(persona, task_type, topic, task, i, meta))
    return ShardOutput(rows=rows, rows_in=len(personas), usage=usage_of(replies))


def _messages(persona: dict, task_type: str, topic: str | None, count: int) -> list[dict]:
    ask = prompts.render(TASK_SPECS[task_type].brainstorm_prompt, count=count)
    if topic:
        ask += "\n\n" + prompts.render("topic", topic=topic)
    return [{"role": "system", "content": prompts.render("persona_system", persona=persona["persona"])},
            {"role": "user", "content": ask}]


def _row(persona: dict, task_type: str, topic: str | None, task: str | None, index: int, meta: dict) -> dict:
    task_id = stable_hash("task", persona["persona_id"], task_type, topic, task, index) if task else None
    return {"task_id": task_id, "persona_id": persona["persona_id"], "persona": persona["persona"],
            "task_type": task_type, "topic": topic, "task": task, **meta}
