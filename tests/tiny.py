"""Tiny run parameters shared by the end-to-end tests."""
import functools
import tempfile
from pathlib import Path

from embedfactory.config import EMBEDDED_MAX_TOKENS, Endpoint, SynthParams, TrainConfig
from embedfactory.eval.sets import SHIPPED


@functools.cache
def small_sts() -> str:
    """The shipped STS-b test set capped at 200 pairs, as a user's EvalSet JSON file."""
    path = Path(tempfile.mkdtemp()) / "stsb-200.json"
    capped = SHIPPED["stsb-test"].model_copy(update={"name": "stsb-200", "max_queries": 200})
    path.write_text(capped.model_dump_json())
    return str(path)


def tiny(store, endpoint: Endpoint, **synth) -> SynthParams:
    return SynthParams(store=str(store), generator=endpoint,
                       # the shared llama-server is the embedded CPU one, reached by URL: its reply cap
                       synth={"personas": 2, "tasks_per_persona": 2, "examples_per_task": 1, "max_num_words": 50, "revise": True,
                              "sampling": {"max_tokens": EMBEDDED_MAX_TOKENS},
                              "task_mix": {"retrieval": 1, "classification": 1, "sts": 1, "short-short": 1},
                              **synth},
                       # plumbing runs of a few rows: no gates and no background, so rows survive to
                       # training (gates: test_gates.py; background pools: test_sharded_verdicts.py)
                       filter={"gates": [], "background_corpus": None},
                       train=TrainConfig(batch_size=4, eval_sets=[small_sts()]))
