"""Task types: prompts, output schema, randomized attributes and training-column mapping.

The six types of E5-mistral / SPEED (DESIGN §6). Attribute distributions follow the references;
every draw comes from a generator seeded by the row's lineage, so a run is reproducible and its
attribute mix can be audited. STS and bitext have no brainstorm step: their task is fixed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from .schemas import ClassificationExample, MatchingExample, Output, RetrievalExample, TripleExample

Choice = list[tuple[object, float]]

CLARITY: Choice = [("clear", .6), ("understandable with some effort", .2), ("ambiguous", .2)]
DIFFICULTY: Choice = [("high school", 1), ("college", 1), ("PhD", 1)]
STS_DIFFICULTY: Choice = [("elementary school", 1), ("high school", 1), ("college", 1)]
QUERY_TYPE: Choice = [("extremely long-tail", .4), ("long-tail", .5), ("common", .1)]
QUERY_LENGTH: Choice = [("less than 5 words", .4), ("5 to 15 words", .4), ("at least 10 words", .2)]
HIGH_SCORE: Choice = [(4, 1), (4.5, 1), (5, 1)]
LOW_SCORE: Choice = [(2.5, 1), (3, 1), (3.5, 1)]
UNIT: Choice = [("sentence", 1), ("phrase", 1), ("passage", 1)]
RETRIEVAL_WORDS = [50, 100, 200, 300, 400, 500]
CLASSIFICATION_WORDS = [10, 50, 100, 200]


@dataclass(frozen=True)
class Draw:
    """What attribute functions get: a seeded generator and the run's caps and languages."""

    rng: random.Random
    max_words: int
    languages: list[str]

    def pick(self, choices: Choice):
        values, weights = zip(*choices)
        return self.rng.choices(values, weights=weights)[0]

    def words(self, options: list[int]) -> int:
        return self.rng.choice([w for w in options if w <= self.max_words] or [min(options)])

    def language(self) -> str:
        return self.rng.choice(self.languages)


def _retrieval(d: Draw) -> dict:
    return {"query_type": d.pick(QUERY_TYPE), "query_length": d.pick(QUERY_LENGTH),
            "clarity": d.pick(CLARITY), "num_words": d.words(RETRIEVAL_WORDS),
            "difficulty": d.pick(DIFFICULTY), "language": d.language()}


def _classification(d: Draw) -> dict:
    return {"clarity": d.pick(CLARITY), "num_words": d.words(CLASSIFICATION_WORDS),
            "difficulty": d.pick(DIFFICULTY), "language": d.language()}


def _short_short(d: Draw) -> dict:
    return {"clarity": d.pick(CLARITY), "difficulty": d.pick(DIFFICULTY), "language": d.language()}


def _long_long(d: Draw) -> dict:
    return {"num_words": d.words(RETRIEVAL_WORDS), "difficulty": d.pick(DIFFICULTY),
            "language": d.language()}


def _sts(d: Draw) -> dict:
    return {"unit": d.pick(UNIT), "high_score": d.pick(HIGH_SCORE), "low_score": d.pick(LOW_SCORE),
            "difficulty": d.pick(STS_DIFFICULTY), "language": d.language()}


def _bitext(d: Draw) -> dict:
    source, target = d.rng.sample(BITEXT_LANGUAGES, 2)
    return {"unit": d.pick(UNIT), "high_score": d.pick(HIGH_SCORE), "low_score": d.pick(LOW_SCORE),
            "difficulty": d.pick(STS_DIFFICULTY), "source_language": source, "target_language": target}


BITEXT_LANGUAGES = ["English", "Chinese", "Spanish", "French", "German", "Japanese", "Russian",
                    "Portuguese", "Arabic", "Hindi"]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    output: type[Output]
    attributes: Callable[[Draw], dict]
    guidelines: int  # guideline lines in its generation template (their order is shuffled)
    columns: Callable[[Output], tuple[str, str, str | None]]  # -> anchor, positive, negative
    task_prefix: str | None = None  # brainstormed task sentences start with it
    fixed_task: str | None = None  # types without a brainstorm step use this instruction

    @property
    def brainstorm_prompt(self) -> str | None:
        return f"brainstorm_{self.name}" if self.fixed_task is None else None

    @property
    def generate_prompt(self) -> str:
        return f"generate_{self.name}"


def _triple(o) -> tuple[str, str, str]:
    return o.S1, o.S2, o.S3


def _matching(o) -> tuple[str, str, None]:
    return o.input, o.positive_document, None


TASK_SPECS: dict[str, TaskSpec] = {spec.name: spec for spec in [
    TaskSpec("retrieval", RetrievalExample, _retrieval, 5,
             lambda o: (o.user_query, o.positive_document, o.hard_negative_document), task_prefix="Given"),
    TaskSpec("classification", ClassificationExample, _classification, 4,
             lambda o: (o.input_text, o.label, o.misleading_label), task_prefix="Classify"),
    TaskSpec("short-short", MatchingExample, _short_short, 4, _matching, task_prefix="Given"),
    TaskSpec("long-long", MatchingExample, _long_long, 3, _matching, task_prefix="Given"),
    TaskSpec("sts", TripleExample, _sts, 5, _triple, fixed_task="Retrieve semantically similar text."),
    TaskSpec("bitext", TripleExample, _bitext, 4, _triple,
             fixed_task="Retrieve parallel sentences that translate the given text."),
]}
