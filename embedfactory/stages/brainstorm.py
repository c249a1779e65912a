"""Task brainstorm (E5 step 1, KaLM personas): per persona and task type, the LLM proposes tasks
while speaking as that persona (the persona is the system prompt)."""
from __future__ import annotations

from .. import prompts
from ..ids import seed_of, stable_hash
from ..llm.client import ChatClient, Request
from ..schemas import task_list
from ..task_types import TASK_SPECS
from .common import ShardOutput, exchange, usage_of


def brainstorm_tasks(client: ChatClient, personas: list[dict], task_types: list[str],
                     per_persona: int, seed: int, progress=None) -> ShardOutput:
    jobs = [(p, t) for p in personas for t in task_types]
    requests = [Request(
        messages=[
            {"role": "system", "content": prompts.render("persona_system", persona=p["persona"])},
            {"role": "user", "content": prompts.render(TASK_SPECS[t].brainstorm_prompt, count=per_persona)},
        ],
        output=task_list(per_persona, TASK_SPECS[t].task_prefix), seed=seed_of(seed, "tasks", p["persona_id"], t)) for p, t in jobs]
    replies = client.run_sync(requests, progress)
    rows = []
    for (persona, task_type), reply in zip(jobs, replies):
        base = {"persona_id": persona["persona_id"], "persona": persona["persona"], "task_type": task_type,
                **exchange(reply, client.endpoint.model, TASK_SPECS[task_type].brainstorm_prompt)}
        if not reply.ok:
            rows.append({**base, "task_id": None, "task": None})
            continue
        for task in dict.fromkeys(reply.value.tasks[:per_persona]):  # exact repeats dropped
            rows.append({**base, "task_id": stable_hash("task", persona["persona_id"], task_type, task),
                         "task": task})
    return ShardOutput(rows=rows, rows_in=len(personas), usage=usage_of(replies))
