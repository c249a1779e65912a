"""Personas (KaLM): the LLM expands the shipped seed list into N distinct personas, or N are
sampled from a user-supplied source. A generated persona that restates the prompt or its seed
(gates.persona) is kept as a rejected row with the gate's reason and asked for again."""
from __future__ import annotations

import math
import random
import re

from .. import prompts
from ..filter import gates
from ..ids import seed_of, stable_hash
from ..llm.client import ChatClient, Request
from ..schemas import count_reasons, persona_list
from .common import ShardOutput, exchange, no_exchange, usage_of
from .sources import seed_personas

PROMPT = "persona_expand"
PER_CALL = 2  # few per call, each call from another seed: more spread than many from one
MAX_ROUNDS = 4


def normalized(text: str) -> str:
    """The form under which two personas count as the same (case, spacing, punctuation ignored)."""
    return re.sub(r"[^\w ]+", "", re.sub(r"\s+", " ", text.casefold())).strip()


def _row(persona: str, source: str, seed_persona: str | None, meta: dict) -> dict:
    return {"persona_id": stable_hash("persona", persona), "persona": persona, "source": source,
            "seed_persona": seed_persona, **meta}


def sample_personas(personas: list[str], count: int, seed: int, source: str) -> ShardOutput:
    """`count` personas drawn without replacement from a user source (all of them if fewer)."""
    picked = random.Random(seed_of(seed, "personas", source)).sample(personas, min(count, len(personas)))
    return ShardOutput(rows=[_row(p, source, None, no_exchange()) for p in picked], rows_in=len(personas))


def expand_personas(client: ChatClient, count: int, seed: int, progress=None) -> ShardOutput:
    """Ask for personas in rounds until `count` distinct ones exist or MAX_ROUNDS have passed."""
    seeds = seed_personas()
    known = {normalized(s) for s in seeds}  # a copy of a seed is not a new persona
    kept: dict[str, dict] = {}
    rejected: list[dict] = []
    replies = []
    duplicates, gated = 0, []  # gated: the gates' reasons
    for round_no in range(MAX_ROUNDS):
        missing = count - len(kept)
        if missing <= 0:
            break
        calls = math.ceil(missing / PER_CALL)
        picks = [seeds[(seed + len(replies) + i) % len(seeds)] for i in range(calls)]
        requests = [Request(
            messages=prompts.messages(PROMPT, seed_persona=p, count=PER_CALL),
            output=persona_list(PER_CALL), seed=seed_of(seed, "personas", round_no, i))
            for i, p in enumerate(picks)]
        round_replies = client.run_sync(requests, progress)
        replies += round_replies
        for seed_persona, reply in zip(picks, round_replies):
            meta = exchange(reply, client.endpoint.model, PROMPT)
            if not reply.ok:
                rejected.append({"persona_id": None, "persona": None, "source": "llm",
                                 "seed_persona": seed_persona, **meta})
                continue
            for persona in reply.value.personas:
                key = normalized(persona)
                if key in kept or key in known or not key:
                    duplicates += 1
                    continue
                if reason := gates.persona(persona, gates.Asked(prompts.fixed_part(PROMPT), seed_persona, {})):
                    gated.append(reason)
                    rejected.append({**_row(persona, "llm", seed_persona, meta), "status": "rejected",
                                     "reject_reason": reason})
                    continue
                kept[key] = _row(persona, "llm", seed_persona, meta)
    rows = list(kept.values())[:count] + rejected
    return ShardOutput(rows=rows, rows_in=len(seeds), usage=usage_of(replies),
                       extra={"duplicates_removed": duplicates, "reasons": count_reasons(gated),
                              "distinct": min(len(kept), count)})
