"""Record types of every stage: the JSON the LLM must return (pydantic) and the Arrow rows written.

Every LLM-made row keeps the raw exchange beside the parsed values (prompt name and version, model,
raw reply, attempts, tokens), so a parsing bug can be fixed offline without paying for the call again.
A reply that never parsed is a row with ``status='rejected'`` and a ``reject_reason``, never a null.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

import pyarrow as pa
from pydantic import (BaseModel, ConfigDict, Field, StringConstraints, create_model, field_validator,
                      model_validator)


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _strip(cls, value):
        if isinstance(value, str):
            value = value.strip()
            if not value:
                raise ValueError("empty string")
        return value


# ---- why a row was dropped ------------------------------------------------------------------
DropKind = Literal["gate", "ranking", "duplicate"]


class Reason(str):
    """Why a row was dropped: its `kind` (a quality gate, the ranking-consistency filter, a
    duplicate), `name` (the gate; 'rank'; 'exact' or 'near') and `detail`. It reads as its text, which
    is what the `drop_reason` column stores ('gate copy: ...', 'ranking: ...', 'near duplicate: ...');
    the kind and name are stored beside it (`drop_kind`, `drop_name`), so reports count from them.
    `published`: a duplicate of a published dataset's row, not of this run's."""

    kind: DropKind
    name: str
    detail: str
    published: bool

    def __new__(cls, kind: DropKind, name: str, detail: str, published: bool = False):
        self = super().__new__(cls, f"{heading(kind, name)}: {detail}")
        self.kind, self.name, self.detail, self.published = kind, name, detail, published
        return self

    def __reduce__(self):
        return Reason, (self.kind, self.name, self.detail, self.published)


def count_reasons(reasons) -> dict[str, dict[str, int]]:
    """Kind -> name -> how many of `reasons` (Reasons, None skipped) it was: what a shard set aside,
    by type, as its record's `extra["reasons"]` keeps it."""
    out: dict[str, dict[str, int]] = {}
    for reason in reasons:
        if reason:
            out.setdefault(reason.kind, {}).setdefault(reason.name, 0)
            out[reason.kind][reason.name] += 1
    return out


def heading(kind: str, name: str) -> str:
    """How a kind and name of drop reason read: 'gate copy', 'ranking', 'exact duplicate'."""
    return {"gate": f"gate {name}", "ranking": "ranking", "duplicate": f"{name} duplicate"}[kind]


# ---- what the LLM returns -------------------------------------------------------------------
def sentence(prefix: str, max_chars: int = 300):
    """One line of text that starts with `prefix`: also a decoding constraint for grammar-guided
    servers, which keeps a small model from wandering off the form or running on."""
    return Annotated[str, StringConstraints(pattern=rf'^{prefix} [^"\\\n]{{8,{max_chars}}}$')]


@lru_cache(maxsize=None)  # one class per shape: requests share it (and its cached JSON schema)
def listing(name: str, field: str, item, count: int) -> type[Output]:
    """A reply {field: [item, ...]} with 1 to `count` items."""
    return create_model(name, __base__=Output, **{field: (list[item], Field(min_length=1, max_length=count))})


def persona_list(count: int) -> type[Output]:
    return listing("PersonaList", "personas", sentence("An?"), count)


def task_list(count: int, prefix: str) -> type[Output]:
    return listing("TaskList", "tasks", sentence(prefix), count)


class GroundedQuery(Output):
    """A query written for a real passage (grounded synthesis): one line, no quotes."""

    query: Annotated[str, StringConstraints(pattern=r'^[^"\\\n]{3,200}$')]


class RetrievalExample(Output):
    user_query: str
    positive_document: str
    hard_negative_document: str

    @model_validator(mode="after")
    def _distinct(self):
        if self.positive_document == self.hard_negative_document:
            raise ValueError("hard_negative_document repeats positive_document")
        return self


class ClassificationExample(Output):
    input_text: str
    label: str
    misleading_label: str

    @model_validator(mode="after")
    def _distinct(self):
        if self.label.casefold() == self.misleading_label.casefold():
            raise ValueError("misleading_label equals label")
        return self


class MatchingExample(Output):
    input: str
    positive_document: str


class TripleExample(Output):
    """STS and bitext: S2 close to S1 in meaning (or its translation), S3 far from it."""

    S1: str
    S2: str
    S3: str

    @model_validator(mode="after")
    def _distinct(self):
        if len({self.S1, self.S2, self.S3}) < 3:
            raise ValueError("S1, S2 and S3 must differ")
        return self


@lru_cache(maxsize=None)
def revision_of(example: type[Output]) -> type[Output]:
    """The revisor's reply for one example type: a judgement and the rewritten example."""
    return create_model(f"{example.__name__}Revision", __base__=Output, reason=str, revision=example)


# ---- what is written ------------------------------------------------------------------------
EXCHANGE = [
    ("status", pa.string()),          # ok | rejected
    ("reject_reason", pa.string()),
    ("model", pa.string()),
    ("prompt_name", pa.string()),
    ("prompt_version", pa.string()),
    ("raw_response", pa.string()),
    ("attempts", pa.int32()),
    ("llm_calls", pa.int32()),
    ("prompt_tokens", pa.int32()),
    ("completion_tokens", pa.int32()),
]
TRAINING = [
    ("anchor", pa.string()),
    ("positive", pa.string()),
    ("negative", pa.string()),        # null where the task type has no negative
]
LINEAGE = [("persona_id", pa.string()), ("task_id", pa.string()), ("example_id", pa.string()),
           ("source_id", pa.string())]  # source_id: the passage a grounded query was written for

PERSONAS = pa.schema([("persona_id", pa.string()), ("persona", pa.string()), ("source", pa.string()),
                      ("seed_persona", pa.string()), *EXCHANGE])
TASKS = pa.schema([("task_id", pa.string()), ("persona_id", pa.string()), ("persona", pa.string()),
                   ("task_type", pa.string()), ("topic", pa.string()), ("task", pa.string()), *EXCHANGE])
EXAMPLES = pa.schema([*LINEAGE, ("task_type", pa.string()), ("task", pa.string()),
                      ("attributes", pa.string()), *TRAINING, ("fields", pa.string()), *EXCHANGE])
REVISED = pa.schema([*LINEAGE, ("task_type", pa.string()), ("task", pa.string()),
                     ("attributes", pa.string()), *TRAINING, ("fields", pa.string()),
                     ("original_fields", pa.string()), ("revision_status", pa.string()),
                     ("revision_reason", pa.string()), *EXCHANGE])
VERDICT_COLUMNS = [("kept", pa.bool_()), ("rank", pa.int32()), ("positive_score", pa.float32()),
                   ("kth_score", pa.float32()), ("drop_reason", pa.string()), ("drop_kind", pa.string()),
                   ("drop_name", pa.string()),
                   ("mined_negatives", pa.list_(pa.string())), ("false_negative_suspects", pa.int32())]
VERDICTS = pa.schema([*REVISED, *VERDICT_COLUMNS])
# a shard's MinHash signatures (synth/duplicates.py): its part of the run's persistent LSH index
SIGNATURES = pa.schema([("label", pa.string()), ("exact", pa.string()), ("minhash", pa.list_(pa.uint32())),
                        ("duplicate", pa.string()), ("duplicate_kind", pa.string()),
                        ("duplicate_published", pa.bool_())])
# group: which pools search the text: a task type, "*" (every pool: the external corpus) or "background"
CORPUS = pa.schema([("text", pa.string()), ("group", pa.string()), ("embedding", pa.list_(pa.float32()))])
# The synth run's stages, in the order rows flow, and the rows each writes (the run engine's registry,
# synth/pipeline.py, declares each with this schema; the duplicates stage writes SIGNATURES).
STAGE_SCHEMAS = {"personas": PERSONAS, "tasks": TASKS, "examples": EXAMPLES, "grounded": REVISED,
                 "revised": REVISED, "corpus": CORPUS, "verdicts": VERDICTS}
ROW_STAGES = tuple(name for name in STAGE_SCHEMAS if name != "corpus")  # those whose rows are examples' lineage
DATASET = pa.schema([*TRAINING, ("instruction", pa.string()), ("task_type", pa.string()), *LINEAGE,
                     ("mined_negatives", pa.list_(pa.string()))])
