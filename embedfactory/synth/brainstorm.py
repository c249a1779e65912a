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


def deal_topics(types: list[list[str]], topics: list[str] | None, per_topic: int,
                seed: int) -> list[dict[str, list[str | None]]]:
    """The topic of every brainstorm prompt (and fixed-task example) of the run, persona by persona:
    `[i][task_type]` lists persona i's topics for that type, one per prompt of `per_topic` tasks
    (fixed types: one per task). Topics are dealt per type from a seeded deck without replacement,
    so a topic gets a second task of a type only once every topic has one (SPEED: one task per
    topic); the deck is reshuffled each pass. Over the whole run, so every shard agrees."""
    dealt, counters, decks = [], Counter(), {}  # decks: task type -> (pass, shuffled topics)
    for wanted in types:
        mine: dict[str, list[str | None]] = {}
        for task_type, count in Counter(wanted).items():
            units = count if TASK_SPECS[task_type].fixed_task is not None else -(-count // per_topic)
            picks = []
            for _ in range(units):
                k = counters[task_type]
                counters[task_type] += 1
                if not topics:
                    picks.append(None)
                    continue
                if decks.get(task_type, (None,))[0] != k // len(topics):
                    deck = list(topics)
                    random.Random(seed_of(seed, "topic-deck", task_type, k // len(topics))).shuffle(deck)
                    decks[task_type] = (k // len(topics), deck)
                picks.append(decks[task_type][1][k % len(topics)])
            mine[task_type] = picks
        dealt.append(mine)
    return dealt


def brainstorm_tasks(client: ChatClient, personas: list[dict], types: list[list[str]], seed: int,
                     topics: list[dict[str, list[str | None]]] | None = None, per_topic: int = 1,
                     progress=None) -> ShardOutput:
    """`types[i]` lists the task types persona i gets (see `assign_task_types`), `topics[i]` their
    topics (see `deal_topics`; None: no topics). Prompts that share a type and a topic in this shard
    are asked in turn, each told the tasks already proposed for that topic, to propose others."""
    topics = topics or [{} for _ in personas]
    rows, jobs = [], []  # a job: (persona, task type, topic, how many tasks)
    for persona, wanted, dealt in zip(personas, types, topics):
        for task_type, count in Counter(wanted).items():
            spec, mine = TASK_SPECS[task_type], dealt.get(task_type) or [None] * count
            if spec.fixed_task is not None:
                rows += [_row(persona, task_type, mine[i], spec.fixed_task, i, no_exchange()) for i in range(count)]
                continue
            for j, start in enumerate(range(0, count, per_topic)):
                jobs.append((persona, task_type, mine[j], min(per_topic, count - start)))
    produced: dict[tuple, list[str]] = {}  # (type, topic) -> tasks proposed for it so far in this shard
    turn, seen = [], Counter()
    for _, task_type, topic, _ in jobs:
        turn.append(seen[(task_type, topic)] if topic else 0)
        seen[(task_type, topic)] += 1
    replies = [None] * len(jobs)
    for r in range(max(turn, default=-1) + 1):
        now = [i for i, t in enumerate(turn) if t == r]
        requests = [Request(messages=_messages(p, t, topic, n, produced.get((t, topic), [])),
                            output=task_list(n, TASK_SPECS[t].task_prefix),
                            seed=seed_of(seed, "tasks", p["persona_id"], t, i))
                    for i, (p, t, topic, n) in ((i, jobs[i]) for i in now)]
        for i, reply in zip(now, client.run_sync(requests, progress)):
            replies[i] = reply
            _, task_type, topic, _ = jobs[i]
            if reply.ok and topic:
                produced.setdefault((task_type, topic), []).extend(reply.value.tasks)
    for (persona, task_type, topic, _), reply in zip(jobs, replies):
        meta = exchange(reply, client.endpoint.model, TASK_SPECS[task_type].brainstorm_prompt)
        if not reply.ok:
            rows.append(_row(persona, task_type, topic, None, 0, meta))
            continue
        for i, task in enumerate(dict.fromkeys(reply.value.tasks)):  # exact repeats dropped
            rows.append(_row(persona, task_type, topic, task, i, meta))
    return ShardOutput(rows=rows, rows_in=len(personas), usage=usage_of([r for r in replies if r]))


def _messages(persona: dict, task_type: str, topic: str | None, count: int, taken: list[str] = ()) -> list[dict]:
    ask = prompts.render(TASK_SPECS[task_type].brainstorm_prompt, count=count)
    if topic:
        ask += "\n\n" + prompts.render("topic", topic=topic, taken=list(taken))
    return [{"role": "system", "content": prompts.render("persona_system", persona=persona["persona"])},
            {"role": "user", "content": ask}]


def _row(persona: dict, task_type: str, topic: str | None, task: str | None, index: int, meta: dict) -> dict:
    task_id = stable_hash("task", persona["persona_id"], task_type, topic, task, index) if task else None
    return {"task_id": task_id, "persona_id": persona["persona_id"], "persona": persona["persona"],
            "task_type": task_type, "topic": topic, "task": task, **meta}
