"""Task types: their prompts, output schema, randomized attributes and training-column mapping.

Attribute distributions follow E5-mistral / SPEED (DESIGN §6); every draw comes from a generator
seeded by the row's lineage, so a run is reproducible and its attribute mix can be audited.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from .schemas import ClassificationExample, Output, RetrievalExample

Choice = list[tuple[object, float]]

CLARITY: Choice = [("clear", .6), ("understandable with some effort", .2), ("ambiguous", .2)]
DIFFICULTY: Choice = [("high school", 1), ("college", 1), ("PhD", 1)]
QUERY_TYPE: Choice = [("extremely long-tail", .4), ("long-tail", .5), ("common", .1)]
QUERY_LENGTH: Choice = [("less than 5 words", .4), ("5 to 15 words", .4), ("at least 10 words", .2)]
RETRIEVAL_WORDS = [50, 100, 200, 300, 400, 500]
CLASSIFICATION_WORDS = [10, 50, 100, 200]


def draw(rng: random.Random, choices: Choice):
    values, weights = zip(*choices)
    return rng.choices(values, weights=weights)[0]


def _words(rng: random.Random, options: list[int], cap: int) -> int:
    return rng.choice([w for w in options if w <= cap] or [min(options)])


def _retrieval_attributes(rng: random.Random, max_words: int) -> dict:
    return {"query_type": draw(rng, QUERY_TYPE), "query_length": draw(rng, QUERY_LENGTH),
            "clarity": draw(rng, CLARITY), "num_words": _words(rng, RETRIEVAL_WORDS, max_words),
            "difficulty": draw(rng, DIFFICULTY), "language": "English"}


def _classification_attributes(rng: random.Random, max_words: int) -> dict:
    return {"clarity": draw(rng, CLARITY), "num_words": _words(rng, CLASSIFICATION_WORDS, max_words),
            "difficulty": draw(rng, DIFFICULTY), "language": "English"}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    output: type[Output]
    attributes: Callable[[random.Random, int], dict]
    task_prefix: str  # every brainstormed task sentence starts with it (see its brainstorm template)
    guidelines: int  # how many guideline lines its generation template has (their order is shuffled)
    columns: Callable[[Output], tuple[str, str, str | None]]  # -> anchor, positive, negative

    @property
    def brainstorm_prompt(self) -> str:
        return f"brainstorm_{self.name}"

    @property
    def generate_prompt(self) -> str:
        return f"generate_{self.name}"


TASK_SPECS: dict[str, TaskSpec] = {
    "retrieval": TaskSpec(
        "retrieval", RetrievalExample, _retrieval_attributes, task_prefix="Given", guidelines=5,
        columns=lambda o: (o.user_query, o.positive_document, o.hard_negative_document)),
    "classification": TaskSpec(
        "classification", ClassificationExample, _classification_attributes, task_prefix="Classify",
        guidelines=4,
        columns=lambda o: (o.input_text, o.label, o.misleading_label)),
}
