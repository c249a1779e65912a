"""Task types: prompts, output schema, randomized attributes and training-column mapping.

The six types of E5-mistral / SPEED (docs/running.md, "The stages", has the attribute table).
Attribute distributions follow the references; every draw comes from a generator seeded by the row's
lineage, so a run is reproducible and its attribute mix can be audited. STS and bitext have no
brainstorm step: their task is fixed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from .schemas import ClassificationExample, MatchingExample, Output, RetrievalExample, TripleExample

Choice = list[tuple[object, float]]

# Reference distributions (docs/running.md, the attribute table): E5-mistral's value sets (arXiv
# 2401.00368, its prompt tables), with SPEED's weights where its prompt code gives them; uniform
# where neither gives weights.
CLARITY: Choice = [("clear", .6), ("understandable with some effort", .2), ("ambiguous", .2)]
DIFFICULTY: Choice = [("high school", 1), ("college", 1), ("PhD", 1)]
STS_DIFFICULTY: Choice = [("elementary school", 1), ("high school", 1), ("college", 1)]
QUERY_TYPE: Choice = [("extremely long-tail", .4), ("long-tail", .5), ("common", .1)]
QUERY_LENGTH: Choice = [("less than 5 words", .4), ("5 to 15 words", .4), ("at least 10 words", .2)]
RETRIEVAL_WORDS: Choice = [(n, 1) for n in (50, 100, 200, 300, 400, 500)]  # "at least N words" per document
CLASSIFICATION_WORDS: Choice = [("less than 10", .1), ("at least 10", .3), ("at least 50", .2),
                                ("at least 100", .2), ("at least 200", .2)]
LONG_LONG_WORDS: Choice = [(300, 1)]  # both texts "at least 300 words"
HIGH_SCORE: Choice = [(4, 1), (4.5, 1), (5, 1)]
STS_LOW_SCORE: Choice = [(2.5, 1), (3, 1), (3.5, 1)]
BITEXT_LOW_SCORE: Choice = [(1.5, 1), (2, 1), (2.5, 1)]
STS_UNIT: Choice = [("sentence", .9), ("phrase", .05), ("passage", .05)]  # SPEED's weights
BITEXT_UNIT: Choice = [("sentence", 1), ("phrase", 1), ("passage", 1)]
OPTIONAL_SHARE = .5  # SPEED asks for the difficulty (with clarity, for classification) in half the prompts

# Bitext pairs are drawn from these (E5 drew from the ~90 languages of XLM-R's pretraining).
BITEXT_LANGUAGES = [
    "Afrikaans", "Albanian", "Amharic", "Arabic", "Armenian", "Assamese", "Azerbaijani", "Basque",
    "Belarusian", "Bengali", "Bosnian", "Breton", "Bulgarian", "Burmese", "Catalan", "Chinese",
    "Croatian", "Czech", "Danish", "Dutch", "English", "Esperanto", "Estonian", "Filipino", "Finnish",
    "French", "Galician", "Georgian", "German", "Greek", "Gujarati", "Hausa", "Hebrew", "Hindi",
    "Hungarian", "Icelandic", "Indonesian", "Irish", "Italian", "Japanese", "Javanese", "Kannada",
    "Kazakh", "Khmer", "Korean", "Kurdish", "Kyrgyz", "Lao", "Latin", "Latvian", "Lithuanian",
    "Macedonian", "Malagasy", "Malay", "Malayalam", "Marathi", "Mongolian", "Nepali", "Norwegian",
    "Oriya", "Oromo", "Pashto", "Persian", "Polish", "Portuguese", "Punjabi", "Romanian", "Russian",
    "Sanskrit", "Scottish Gaelic", "Serbian", "Sindhi", "Sinhala", "Slovak", "Slovenian", "Somali",
    "Spanish", "Sundanese", "Swahili", "Swedish", "Tamil", "Telugu", "Thai", "Turkish", "Ukrainian",
    "Urdu", "Uyghur", "Uzbek", "Vietnamese", "Welsh", "Western Frisian", "Xhosa", "Yiddish"]


@dataclass(frozen=True)
class Attr:
    """One randomized attribute: its reference distribution; `optional` names a group of attributes
    that a prompt carries together in OPTIONAL_SHARE of the draws (absent otherwise); `length`: a
    word-count ask, whose values above the run's cap are dropped (the cap itself if none is left)."""

    choices: Choice
    optional: str | None = None
    length: bool = False


LANGUAGE = "language"  # drawn uniformly from the run's `languages`
BITEXT_PAIR = "bitext_pair"  # source_language, target_language: two different BITEXT_LANGUAGES

ATTRIBUTES: dict[str, dict[str, Attr | str]] = {
    "retrieval": {"query_type": Attr(QUERY_TYPE), "query_length": Attr(QUERY_LENGTH),
                  "clarity": Attr(CLARITY), "num_words": Attr(RETRIEVAL_WORDS, length=True),
                  "difficulty": Attr(DIFFICULTY, optional="difficulty"), "language": LANGUAGE},
    "classification": {"num_words": Attr(CLASSIFICATION_WORDS, length=True),
                       "clarity": Attr(CLARITY, optional="comprehension"),
                       "difficulty": Attr(DIFFICULTY, optional="comprehension"), "language": LANGUAGE},
    "short-short": {"language": LANGUAGE},
    "long-long": {"num_words": Attr(LONG_LONG_WORDS, length=True), "language": LANGUAGE},
    "sts": {"unit": Attr(STS_UNIT), "high_score": Attr(HIGH_SCORE), "low_score": Attr(STS_LOW_SCORE),
            "difficulty": Attr(STS_DIFFICULTY, optional="difficulty"), "language": LANGUAGE},
    "bitext": {"unit": Attr(BITEXT_UNIT), "high_score": Attr(HIGH_SCORE), "low_score": Attr(BITEXT_LOW_SCORE),
               "difficulty": Attr(STS_DIFFICULTY), "languages": BITEXT_PAIR},
}


def lower_bound(value) -> float:
    """The fewest words a length value asks: 50 -> 50, "at least 10" -> 10, "less than 10" -> 0."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value)
    return 0.0 if text.startswith("less than") else float(text.split()[-1])


@dataclass(frozen=True)
class Draw:
    """What attribute draws get: a seeded generator and the run's cap (None: none) and languages."""

    rng: random.Random
    max_words: int | None
    languages: list[str]

    def pick(self, choices: Choice):
        values, weights = zip(*choices)
        return self.rng.choices(values, weights=weights)[0]

    def capped(self, choices: Choice) -> Choice:
        if self.max_words is None:
            return choices
        kept = [(v, w) for v, w in choices if lower_bound(v) <= self.max_words]
        return kept or [(self.max_words, 1)]

    def language(self) -> str:
        return self.rng.choice(self.languages)


def draw_attributes_for(task_type: str, d: Draw) -> dict:
    """One draw of a task type's attributes (optional groups in OPTIONAL_SHARE of the draws)."""
    groups: dict[str, bool] = {}
    out: dict = {}
    for name, attr in ATTRIBUTES[task_type].items():
        if attr == LANGUAGE:
            out[name] = d.language()
        elif attr == BITEXT_PAIR:
            out["source_language"], out["target_language"] = d.rng.sample(BITEXT_LANGUAGES, 2)
        elif attr.optional is None or groups.setdefault(attr.optional, d.rng.random() < OPTIONAL_SHARE):
            out[name] = d.pick(d.capped(attr.choices) if attr.length else attr.choices)
    return out


def reference_distribution(task_type: str) -> dict[str, dict[str, float]]:
    """The reference share of each value of each drawn attribute (before any length cap); an
    optional attribute's absence is the value NOT_ASKED. Languages are left out (the run's own)."""
    out = {}
    for name, attr in ATTRIBUTES[task_type].items():
        if isinstance(attr, Attr):
            asked = OPTIONAL_SHARE if attr.optional else 1.0
            total = sum(w for _, w in attr.choices)
            out[name] = {str(v): asked * w / total for v, w in attr.choices}
            if attr.optional:
                out[name][NOT_ASKED] = 1 - asked
    return out


NOT_ASKED = "(not asked)"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    output: type[Output]
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
    TaskSpec("retrieval", RetrievalExample, 5,
             lambda o: (o.user_query, o.positive_document, o.hard_negative_document), task_prefix="Given"),
    TaskSpec("classification", ClassificationExample, 4,
             lambda o: (o.input_text, o.label, o.misleading_label), task_prefix="Classify"),
    TaskSpec("short-short", MatchingExample, 4, _matching, task_prefix="Given"),
    TaskSpec("long-long", MatchingExample, 3, _matching, task_prefix="Given"),
    TaskSpec("sts", TripleExample, 6, _triple, fixed_task="Retrieve semantically similar text."),
    TaskSpec("bitext", TripleExample, 5, _triple,
             fixed_task="Retrieve parallel sentences that translate the given text."),
]}
