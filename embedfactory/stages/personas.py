"""Persona brainstorm (KaLM): the LLM expands a shipped seed list into N distinct personas."""
from __future__ import annotations

import math
import re
from importlib import resources

from .. import prompts
from ..ids import seed_of, stable_hash
from ..llm.client import ChatClient, Request
from ..schemas import persona_list
from .common import ShardOutput, exchange, usage_of

PROMPT = "persona_expand"
PER_CALL = 2  # few per call, each call from another seed: more spread than many from one
MAX_ROUNDS = 4


def seed_personas() -> list[str]:
    text = resources.files("embedfactory.data").joinpath("seed_personas.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def normalized(text: str) -> str:
    """The form under which two personas count as the same (case, spacing, punctuation ignored)."""
    return re.sub(r"[^\w ]+", "", re.sub(r"\s+", " ", text.casefold())).strip()


def expand_personas(client: ChatClient, count: int, seed: int, progress=None) -> ShardOutput:
    """Ask for personas in rounds until `count` distinct ones exist or MAX_ROUNDS have passed."""
    seeds = seed_personas()
    known = {normalized(s) for s in seeds}  # a copy of a seed is not a new persona
    kept: dict[str, dict] = {}
    rejected: list[dict] = []
    replies = []
    duplicates = 0
    for round_no in range(MAX_ROUNDS):
        missing = count - len(kept)
        if missing <= 0:
            break
        calls = math.ceil(missing / PER_CALL)
        picks = [seeds[(seed + len(replies) + i) % len(seeds)] for i in range(calls)]
        requests = [Request(
            messages=[{"role": "user", "content": _prompt(p)}],
            output=persona_list(PER_CALL), seed=seed_of(seed, "personas", round_no, i)) for i, p in enumerate(picks)]
        round_replies = client.run_sync(requests, progress)
        replies += round_replies
        for seed_persona, reply in zip(picks, round_replies):
            meta = exchange(reply, client.endpoint.model, PROMPT)
            if not reply.ok:
                rejected.append({"persona_id": None, "persona": None, "seed_persona": seed_persona, **meta})
                continue
            for persona in reply.value.personas:
                key = normalized(persona)
                if key in kept or key in known or not key:
                    duplicates += 1
                    continue
                kept[key] = {"persona_id": stable_hash("persona", persona), "persona": persona,
                             "seed_persona": seed_persona, **meta}
    rows = list(kept.values())[:count] + rejected
    return ShardOutput(rows=rows, rows_in=len(seeds), usage=usage_of(replies),
                       extra={"duplicates_removed": duplicates, "distinct": min(len(kept), count)})


def _prompt(seed_persona: str) -> str:
    return prompts.render(PROMPT, seed_persona=seed_persona, count=PER_CALL)
