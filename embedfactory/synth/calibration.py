"""Gate calibration on real queries: how many of a retrieval set's own queries would the grounded
gates reject?

Each real query is judged as if the grounded stage had written it for each of its relevant
documents: the document is the source passage, the attributes are those the grounded stage draws
(`grounded.draw_attributes`), the fixed prompt and task are the grounded prompt's. Real
queries are what grounded queries should look like, so a gate that rejects many of them is
miscalibrated (the gates help only where they reject what is bad: bench/RESULTS.md, gate calibration).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from .. import prompts
from ..config import GroundedConfig
from ..eval.sets import RetrievalData
from ..filter import gates
from . import grounded


@dataclass
class GateRejects:
    """Per gate, how many (query, relevant document) pairs it rejects; `rejected`: pairs any gate rejects."""

    pairs: int = 0
    rejected: int = 0
    queries: int = 0
    queries_rejected: int = 0  # queries that some gate rejects for at least one of their documents
    per_gate: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few reasons per gate

    @property
    def share(self) -> float:
        return self.rejected / self.pairs if self.pairs else 0.0

    @property
    def query_share(self) -> float:
        return self.queries_rejected / self.queries if self.queries else 0.0

    def gate_share(self, gate: str) -> float:
        return self.per_gate[gate] / self.pairs if self.pairs else 0.0


def real_query_rejects(data: RetrievalData, seed: int = 0, instruction: str | None = None,
                       draw: Callable[[str, int, int], dict] = grounded.draw_attributes,
                       examples: int = 3) -> GateRejects:
    """Run every grounded gate over each real query paired with each of its relevant documents.

    `draw(passage_id, index, seed)` gives the attributes (default: the grounded stage's own draw);
    the document id is the passage id and 0 the index. The document's title (`data.titles`, where
    the set has them) goes to the copy gate, as a grounded run on the corpus passes it. The whole
    document ("title text") is the passage: a grounded run cuts it into `passage_words` pieces."""
    instruction = GroundedConfig().instruction if instruction is None else instruction
    fixed = prompts.fixed_part(grounded.PROMPT)
    titles = getattr(data, "titles", None) or {}
    out = GateRejects()
    for qid, query in data.queries.items():
        docs = [d for d in data.qrels.get(qid, {}) if d in data.corpus]
        out.queries += bool(docs)
        query_failed = False
        for doc_id in docs:
            asked = gates.Asked(fixed, instruction, draw(doc_id, 0, seed))
            title = titles.get(doc_id) or None
            out.pairs += 1
            failed = False
            for gate in gates.QUERY_GATES:
                if reason := gates.check_query(query, data.corpus[doc_id], title, asked, names=(gate,)):
                    failed = True
                    out.per_gate[gate] += 1
                    kept = out.examples.setdefault(gate, [])
                    if len(kept) < examples:
                        kept.append(f"query {qid}, doc {doc_id}: {reason} | {query[:100]}")
            out.rejected += failed
            query_failed |= failed
        out.queries_rejected += query_failed
    return out
