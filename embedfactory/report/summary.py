"""Per-stage run summary: rows in and out, rejects, and what this run itself paid (LLM calls,
tokens, seconds); shards reused from an earlier run count their rows but cost nothing now."""
from __future__ import annotations

from ..schemas import heading
from ..store import ShardRecord


def stage_summary(records: dict[str, list[ShardRecord]], run_token: str,
                  training: dict | None = None, cost_usd: dict[str, float] | None = None) -> list[dict]:
    """One row per stage; `cost_usd`: what each stage's calls of this invocation cost (llm/costs.py)."""
    table, cost_usd = [], cost_usd or {}
    for stage, shards in records.items():
        if not shards:  # a stage this run does not have (e.g. grounded without a corpus)
            continue
        fresh = [r for r in shards if r.run_token == run_token]
        table.append({
            "stage": stage, "shards": len(shards), "reused": len(shards) - len(fresh),
            "rows_in": sum(r.rows_in for r in shards), "rows_out": sum(r.rows for r in shards),
            "rejected": sum(r.rejected for r in shards), "dropped": sum(r.dropped for r in shards),
            "llm_calls": sum(r.llm_calls for r in fresh),
            "tokens": sum(r.prompt_tokens + r.completion_tokens for r in fresh),
            "cached": _share(sum(r.cached_tokens for r in fresh), sum(r.prompt_tokens for r in fresh)),
            "cost_usd": round(cost_usd.get(stage, 0.0), 4),
            "seconds": round(sum(r.seconds for r in fresh), 1),
            "why": reasons(shards),
        })
    if training is not None:
        fresh = training.get("run_token") == run_token
        table.append({"stage": "train", "shards": 1, "reused": int(not fresh), "rows_in": training["rows"],
                      "rows_out": training["rows"], "rejected": 0, "dropped": 0, "llm_calls": 0, "tokens": 0,
                      "cached": "-", "cost_usd": 0.0, "seconds": training["seconds"] if fresh else 0.0, "why": ""})
    return table


def reasons(shards: list[ShardRecord]) -> str:
    """What the stage's shards dropped or rejected, by quality gate, duplicates and ranking, from the
    typed counts each shard's record keeps (`extra["reasons"]`: kind -> name -> rows): e.g.
    'gate copy 8, gate length 5, ranking 3, duplicate 1' ('' when nothing)."""
    counts: dict[str, int] = {}
    for record in shards:
        for kind, names in record.extra.get("reasons", {}).items():
            for name, n in names.items():
                label = "duplicate" if kind == "duplicate" else heading(kind, name)
                counts[label] = counts.get(label, 0) + n
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n)


def _share(part: int, whole: int) -> str:
    """Prompt tokens served from the server's prefix cache, as a percentage ('-' without prompts)."""
    return f"{part / whole:.0%}" if whole else "-"


def format_table(table: list[dict], columns: list[str] | None = None) -> str:
    """Plain-text table; the first column left-aligned, the others right-aligned."""
    columns = columns or list(table[0])
    widths = {c: max(len(c), *(len(str(row[c])) for row in table)) for c in columns}
    def line(cells) -> str:
        return "  ".join(str(cells[c]).ljust(widths[c]) if c == columns[0] else str(cells[c]).rjust(widths[c])
                         for c in columns)
    return "\n".join([line({c: c for c in columns}), *(line(row) for row in table)])
