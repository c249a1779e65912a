"""Training rows as the sentence-transformers Trainer reads them.

A published row (anchor, instruction, positive, optional generated negative, optional mined negatives,
optional teacher scores) becomes one entry of a `RowTable` and one row of a `datasets.Dataset` with
columns `anchor` (the query as `TrainConfig.query_template` shows it), `positive`, `negatives` (a list:
the generated negative, then the first `mined_negatives` mined ones; rows may have different numbers)
and `label` (the row's index in the table). `RowCollator` tokenises the three text columns with the
model's prompts (the query prompt for anchors, the document prompt for the others) and flattens the
negatives of a batch into one column; the losses (`rowloss.RowLoss`) look everything else a row carries
(its texts for the equal-text mask, the teacher's scores, the guide's embeddings) up by its label.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from sentence_transformers.base.data_collator import BaseDataCollator


def query_text(row: dict, template: str) -> str:
    return template.format(instruction=row["instruction"], query=row["anchor"])


def hard_negatives(row: dict, mined: int | None) -> list[str]:
    """The row's generated negative (if any) and its first `mined` mined ones (None: all of them)."""
    generated = [row["negative"]] if row.get("negative") is not None else []
    return generated + list(row.get("mined_negatives") or [])[:mined]


@dataclass
class RowTable:
    """The training rows, by index: what a loss needs to know of a row beyond its embeddings."""

    anchors: list[str]
    positives: list[str]
    negatives: list[list[str]]
    teacher: list[list[float]] | None = None  # per row: the positive's score, then each negative's
    groups: list[str | None] = field(default_factory=list)  # the sampler's task key

    @classmethod
    def from_rows(cls, rows: list[dict], template: str, mined: int | None, group_key: str = "task_type",
                  teacher: bool = False) -> "RowTable":
        return cls(anchors=[query_text(r, template) for r in rows], positives=[r["positive"] for r in rows],
                   negatives=[hard_negatives(r, mined) for r in rows],
                   teacher=[list(r["teacher_scores"]) for r in rows] if teacher else None,
                   groups=[r.get(group_key) for r in rows])

    def __len__(self) -> int:
        return len(self.anchors)

    def dataset(self):
        """The `datasets.Dataset` the Trainer iterates (see the module docstring)."""
        from datasets import Dataset

        return Dataset.from_dict({"anchor": self.anchors, "positive": self.positives, "negatives": self.negatives,
                                  "label": list(range(len(self)))})

    def doc_texts(self, rows: list[int]) -> list[str]:
        """The texts of a batch's document column: every positive, then every negative, in row order."""
        return [self.positives[r] for r in rows] + [n for r in rows for n in self.negatives[r]]

    def owners(self, rows: list[int]) -> list[int]:
        """For each negative of the batch (in `doc_texts` order), the position of its row in the batch."""
        return [i for i, r in enumerate(rows) for _ in self.negatives[r]]


@dataclass
class RowCollator(BaseDataCollator):
    """Tokenises anchors, positives and the batch's negatives (flattened; left out when the batch has
    none); `label` holds the rows' indices. `prompts` maps each column to its prompt."""

    def __call__(self, features: list[dict]) -> dict:
        batch = {"label": torch.tensor([f["label"] for f in features])}
        columns = {"anchor": [f["anchor"] for f in features], "positive": [f["positive"] for f in features],
                   "negatives": [n for f in features for n in f["negatives"]]}
        for name, texts in columns.items():
            if not texts:
                continue
            prompt = (self.prompts or {}).get(name) or None
            for key, value in self.preprocess_fn(texts, prompt=prompt).items():
                batch[f"{name}_{key}"] = value
        return batch
