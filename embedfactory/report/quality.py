"""The data-quality report of a run: what was made, what was thrown away and why, what it cost.

Read from the stage shards (rejected and dropped rows included), so it can be rebuilt offline.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np

from ..schemas import heading
from ..store import ShardRecord
from ..task_types import NOT_ASKED, TASK_SPECS, reference_distribution


def _reason_class(reason: str) -> str:
    """'schema: tasks.0: String should match pattern ...' -> 'schema: tasks.0'."""
    head, _, rest = reason.partition(": ")
    return f"{head}: {rest.split(':')[0]}" if head == "schema" else head


def _lengths(texts: list[str | None]) -> dict:
    words = np.array([len(t.split()) for t in texts if t])
    if not len(words):
        return {"count": 0}
    return {"count": int(len(words)), "min": int(words.min()), "p50": float(np.median(words)),
            "p90": float(np.percentile(words, 90)), "max": int(words.max())}


# What the report reads of each stage's rows: not the raw replies, fields or embeddings
COLUMNS = ["status", "reject_reason", "task_type", "source_id", "attributes", "kept", "drop_reason", "drop_kind",
           "drop_name", "revision_status", "anchor", "positive", "negative", "prompt_name", "prompt_version"]


def attribute_histograms(examples: list[dict], kept: list[dict]) -> dict:
    """Per task type and drawn attribute, each value's share among the generation prompts (`drawn`),
    among the kept rows (`kept`) and in the reference recipe (`reference`, see task_types)."""
    counts: dict[str, dict[str, dict[str, Counter]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(Counter)))
    totals: dict[str, Counter] = defaultdict(Counter)
    for side, rows in (("drawn", examples), ("kept", kept)):
        for row in rows:
            if row.get("source_id") or row["task_type"] not in TASK_SPECS or not row.get("attributes"):
                continue  # grounded rows (a source passage): their own draws
            totals[row["task_type"]][side] += 1
            attrs = json.loads(row["attributes"])
            for name in reference_distribution(row["task_type"]):
                counts[row["task_type"]][name][side][str(attrs.get(name, NOT_ASKED))] += 1
    out = {}
    for task_type, by_name in counts.items():
        reference = reference_distribution(task_type)
        out[task_type] = {name: {value: {"reference": round(reference[name].get(value, 0.0), 3),
                                         **{side: round(sides[side][value] / totals[task_type][side], 3)
                                            if totals[task_type][side] else 0.0 for side in ("drawn", "kept")}}
                                 for value in sorted(set(reference[name]) | set(sides["drawn"]) | set(sides["kept"]))}
                          for name, sides in by_name.items()}
    return out


def quality_report(stage_rows: dict[str, list[dict]], records: dict[str, list[ShardRecord]],
                   usage: list[dict]) -> dict:
    verdicts = stage_rows["verdicts"]
    kept = [r for r in verdicts if r["kept"]]
    drops = Counter(heading(r["drop_kind"], r["drop_name"]) for r in verdicts if not r["kept"])
    revised = [r for r in stage_rows.get("revised", []) if r["status"] == "ok"]
    revisions = Counter(r["revision_status"] for r in revised)
    judged = revisions["revised"] + revisions["unchanged"]
    duplicates = Counter()
    for shard in records["verdicts"]:
        duplicates.update({k: v for k, v in shard.extra.items() if k.startswith("duplicates")})
    dropped_as_duplicates = duplicates["duplicates_exact"] + duplicates["duplicates_near"]  # of_published: a subset
    return {
        "rows": {stage: {"ok": sum(r["status"] == "ok" for r in rows),
                         "rejected": sum(r["status"] == "rejected" for r in rows)}
                 for stage, rows in stage_rows.items()},
        "kept": len(kept),
        "by_task_type": {"examples": dict(Counter(r["task_type"] for stage in ("examples", "grounded")
                                                  for r in stage_rows.get(stage, []))),
                         "kept": dict(Counter(r["task_type"] for r in kept))},
        "attributes": attribute_histograms(stage_rows.get("examples", []), kept),
        "lengths_in_words": {c: _lengths([r[c] for r in kept]) for c in ("anchor", "positive", "negative")},
        "rejection_reasons": {stage: dict(Counter(_reason_class(r["reject_reason"]) for r in rows
                                                  if r["status"] == "rejected" and r["reject_reason"]))
                              for stage, rows in stage_rows.items()},
        "revisor": {**dict(revisions), "change_rate": round(revisions["revised"] / judged, 3) if judged else None,
                    # a reply that never parsed leaves the original in use; why it failed:
                    "failed_reasons": dict(Counter(_reason_class(r["reject_reason"]) for r in revised
                                                   if r["revision_status"] == "rejected" and r["reject_reason"]))},
        "filter_drops": dict(drops),
        "duplicates": {**dict(duplicates),
                       "rate": round(dropped_as_duplicates / len(verdicts), 3) if verdicts else 0.0},
        "llm_usage": usage,
        "prompt_versions": {name: sorted(versions) for name, versions in sorted(_prompt_versions(stage_rows).items())},
    }


def _prompt_versions(stage_rows: dict[str, list[dict]]) -> dict[str, set[str]]:
    """Each prompt the run's rows were made with, and its template version(s)."""
    out: dict[str, set[str]] = {}
    for rows in stage_rows.values():
        for r in rows:
            if r.get("prompt_name") and r.get("prompt_version"):
                out.setdefault(r["prompt_name"], set()).add(r["prompt_version"])
    return out


def attribute_lines(attributes: dict) -> list[str]:
    """`attribute_histograms` as text, a line per task type and attribute: each value's drawn share / the recipe's."""
    return [f"{task_type:15s} {name:13s} " + "  ".join(f"{value}: {s['drawn']:.2f}/{s['reference']:.2f}"
                                                     for value, s in values.items())
            for task_type, by_name in attributes.items() for name, values in by_name.items()]


def to_markdown(report: dict) -> str:
    lines = ["# Data quality", "", f"kept rows: {report['kept']}", "", "| stage | ok | rejected |", "|---|---|---|"]
    lines += [f"| {s} | {c['ok']} | {c['rejected']} |" for s, c in report["rows"].items()]
    lines += ["", "| stage | model | calls | prompt tokens | from prefix cache | completion tokens | "
              "schema fallbacks | cost (USD) |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {u['stage']} | {u['model']} | {u['calls']} | {u['prompt_tokens']} | "
              f"{u['prompt_cache_hit_rate']:.0%} | {u['completion_tokens']} | {u['schema_fallbacks']} | "
              f"{u['cost_usd']} |" for u in report["llm_usage"]]
    lines += ["", "## attributes (share of prompts drawn, of rows kept, and in the reference recipe)", "",
              "| task type | attribute | value | reference | drawn | kept |", "|---|---|---|---|---|---|"]
    lines += [f"| {t} | {a} | {v} | {s['reference']:.3f} | {s['drawn']:.3f} | {s['kept']:.3f} |"
              for t, by in report["attributes"].items() for a, values in by.items() for v, s in values.items()]
    if alignment := report.get("alignment"):
        lines += ["", "## teacher calls per example (SPEED's economics)", "",
                  f"{alignment['teacher_calls']} teacher calls (align run(s) {', '.join(alignment['align_runs'])}: "
                  f"{alignment.get('align_teacher_calls', alignment['teacher_calls'])}, this run's brainstorm: "
                  f"{alignment.get('brainstorm_teacher_calls', 0)}) for {alignment['examples_generated']} "
                  "examples generated: "
                  f"{alignment['teacher_calls_per_example']} per example (SPEED "
                  f"{alignment['speed_calls_per_example']}, E5-mistral {alignment['e5_mistral_calls_per_example']})"]
    for title in ("by_task_type", "rejection_reasons", "filter_drops", "duplicates", "revisor",
                  "lengths_in_words", "prompt_versions"):
        if title in report:  # prompt_versions: not in reports written before it
            lines += ["", f"## {title.replace('_', ' ')}", "", "```json", json.dumps(report[title], indent=1), "```"]
    return "\n".join(lines)
