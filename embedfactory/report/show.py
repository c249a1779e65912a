"""`python -m embedfactory show STORE`: what a run made, without opening Parquet by hand: each stage's
counts, sample rows (or the rejected ones with their reasons), and the lineage of one row, persona ->
task -> example -> revision -> verdict."""
from __future__ import annotations

import json
import textwrap
from collections import Counter

from ..schemas import ROW_STAGES, heading
from ..store import StageDir, Store, StoreError

STAGES = ROW_STAGES  # in the order rows flow
SHOWN = {  # the columns worth reading per stage (the rest: raw replies, tokens, lineage ids)
    "personas": ("persona_id", "persona"),
    "tasks": ("task_id", "task_type", "topic", "task"),
    "examples": ("example_id", "task_type", "attributes", "fields"),
    "grounded": ("example_id", "source_id", "anchor", "positive"),
    "revised": ("example_id", "revision_status", "revision_reason", "fields"),
    "verdicts": ("example_id", "kept", "rank", "drop_reason", "anchor", "positive", "negative"),
}
WIDTH = 100


def runs(store: Store) -> list[str]:
    root = store.path("runs")
    return sorted({p[len(root) + 1:].split("/", 1)[0] for p in store.list(root, recursive=True)
                   if p.endswith("/summary.json") or "/_shards/" in p}) if store.exists(root) else []


def latest_run(store: Store) -> str:
    """The run of the most recently published dataset, else the last run folder by name."""
    datasets = store.path("datasets")
    pointers = [p for p in store.list(datasets, recursive=True) if p.endswith("/latest.json")] \
        if store.exists(datasets) else []
    if pointers:
        newest = max(pointers, key=lambda p: store.fs.get_file_info(p).mtime_ns or 0)
        return store.read_json(newest)["version"]
    found = runs(store)
    if not found:
        raise StoreError(f"store {store.uri!r} holds no run")
    return found[-1]


def _table(store: Store, run: str, stage: str, ok_only: bool = False):
    try:
        return StageDir(store, run, stage).read(ok_only=ok_only)
    except StoreError:
        return None


def counts(store: Store, run: str) -> list[str]:
    lines = []
    for stage in STAGES:
        table = _table(store, run, stage)
        if table is None:
            continue
        rows = table.to_pylist()
        status = Counter(r.get("status", "ok") for r in rows)
        line = f"{stage:<9} {status['ok']:>6} ok {status['rejected']:>5} rejected"
        if stage == "verdicts":
            line += f" {sum(bool(r['kept']) for r in rows):>6} kept"
        if stage == "revised":
            line += "  " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(r["revision_status"] for r in rows).items()))
        lines.append(line)
    return lines


def reasons(rows: list[dict]) -> list[str]:
    """Reject and drop reasons, most frequent first, with the leading 'gate <name>' as the class."""
    why = Counter(_reason(r) for r in rows if _reason(r))
    return [f"{n:>5}  {reason}" for reason, n in why.most_common()]


def _reason(row: dict) -> str | None:
    if row.get("drop_kind") == "gate":
        return heading("gate", row["drop_name"])
    reason = row.get("reject_reason") if row.get("status") == "rejected" else row.get("drop_reason")
    if not reason:
        return None
    # a reply's reject reason is text (a persona or revision failing a gate reads 'gate <name>: ...')
    return reason.split(":")[0] if reason.startswith("gate ") else reason[:80]


def sample(store: Store, run: str, stage: str, rejected: bool = False, n: int = 5) -> list[str]:
    table = _table(store, run, stage)
    if table is None:
        raise StoreError(f"run {run!r} has no stage {stage!r}; it has: "
                         f"{', '.join(s for s in STAGES if _table(store, run, s) is not None)}")
    rows = table.to_pylist()
    if rejected:
        rows = [r for r in rows if r.get("status") == "rejected" or r.get("kept") is False]
    lines = [f"{len(rows)} {'rejected ' if rejected else ''}rows of {stage}"]
    if rejected:
        lines += ["reasons:", *reasons(rows)]
    for row in rows[:n]:
        lines.append("-" * WIDTH)
        columns = SHOWN.get(stage, tuple(row))
        lines += [_field(c, row.get(c)) for c in columns if c in row]
        if rejected:
            lines.append(_field("why", row.get("reject_reason") or row.get("drop_reason")))
    return lines


def lineage(store: Store, run: str, example_id: str | None = None) -> list[str]:
    """One row's way through the stages: by `example_id`, else the first kept row."""
    verdicts = _table(store, run, "verdicts")
    rows = verdicts.to_pylist() if verdicts is not None else []
    if example_id is None:
        row = next((r for r in rows if r["kept"]), rows[0] if rows else None)
        if row is None:
            raise StoreError(f"run {run!r} has no verdicts yet")
        example_id = row["example_id"]
    found = {}
    for stage in ("examples", "grounded", "revised", "verdicts"):
        table = _table(store, run, stage)
        match = [r for r in table.to_pylist() if r.get("example_id") == example_id] if table is not None else []
        if match:
            found[stage] = match[0]
    if not found:
        raise StoreError(f"no row {example_id!r} in run {run!r}")
    first = next(iter(found.values()))
    for stage, key in (("tasks", "task_id"), ("personas", "persona_id")):
        table = _table(store, run, stage)
        if table is not None and first.get(key):
            match = [r for r in table.to_pylist() if r.get(key) == first[key]]
            if match:
                found[stage] = match[0]
    lines = [f"lineage of {example_id}"]
    for stage in STAGES:
        if stage in found:
            lines += ["-" * WIDTH, f"[{stage}]",
                      *(_field(c, found[stage].get(c)) for c in SHOWN[stage] if c in found[stage])]
            if found[stage].get("status") == "rejected":
                lines.append(_field("rejected", found[stage].get("reject_reason")))
    return lines


def _field(name: str, value) -> str:
    if isinstance(value, str) and value.startswith("{"):
        try:
            value = json.dumps(json.loads(value), ensure_ascii=False)
        except ValueError:
            pass
    text = "" if value is None else str(value)
    return textwrap.fill(text, WIDTH, initial_indent=f"{name:>16}: ", subsequent_indent=" " * 18) or f"{name:>16}:"


def show(store_uri: str, run: str | None = None, stage: str | None = None, rejected: bool = False,
         example: str | None = None, n: int = 5) -> str:
    store = Store(store_uri)
    run = run or latest_run(store)
    lines = [f"run {run} (runs in the store: {', '.join(runs(store))})", *counts(store, run)]
    if stage:
        lines += ["", *sample(store, run, stage, rejected, n)]
    elif rejected:
        for name in STAGES:
            table = _table(store, run, name)
            if table is not None and (why := reasons(table.to_pylist())):
                lines += ["", f"{name}: reject/drop reasons", *why]
    if example or not stage:
        lines += ["", *lineage(store, run, example)]
    return "\n".join(lines)
