"""SPEED's economics: the teacher calls that made a generator, per example the generator then wrote.

Flow `align` spends teacher calls once (seed set, preference judgments, revisions) and registers the
models it makes in `registry/generators.json`; a synthesis run whose generator (or revisor) is one
of them divides that align run's teacher calls by the examples it generated. SPEED: 45K calls for
920K examples; E5-mistral: one GPT-4 call per example.
"""
from __future__ import annotations

from ..store import Store

SPEED_CALLS, SPEED_EXAMPLES = 45_000, 920_000
E5_CALLS, E5_EXAMPLES = 500_000, 500_000
REGISTRY = ("registry", "generators.json")


def teacher_calls_per_example(store: Store, models: list[str], examples: int,
                              brainstorm_calls: int = 0) -> dict | None:
    """The teacher calls of the align runs that made `models` (registry names as served, e.g.
    'aligned-senior'), each run counted once, plus `brainstorm_calls` (this run's persona and task
    calls when a separate teacher brainstormed them, as in SPEED), over `examples` generated; None when
    no model is a registered one."""
    path = store.path(*REGISTRY)
    registry = store.read_json(path) if store.exists(path) else {}
    runs = sorted({registry[m]["run_id"] for m in models if m in registry})
    if not runs:
        return None
    reports = {run: store.path("runs", run, "align_report.json") for run in runs}
    runs = [run for run in runs if store.exists(reports[run])]  # an align run cut short has none
    if not runs:
        return None
    align_calls = sum(next(r["teacher_calls"] for r in store.read_json(reports[run])["teacher_calls"]
                           if r["stage"] == "total") for run in runs)
    calls = align_calls + brainstorm_calls
    return {"align_runs": runs, "align_teacher_calls": align_calls, "brainstorm_teacher_calls": brainstorm_calls,
            "teacher_calls": calls, "examples_generated": examples,
            "teacher_calls_per_example": round(calls / examples, 6) if examples else None,
            "speed_calls_per_example": round(SPEED_CALLS / SPEED_EXAMPLES, 6),
            "e5_mistral_calls_per_example": E5_CALLS / E5_EXAMPLES}
