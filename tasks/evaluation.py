"""Prefect task around the evaluation job: base vs fine-tuned as a table artifact and JSON."""
from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact

from embedfactory.eval.heldout import compare, resolve_eval_sets, score_model
from embedfactory.ids import stable_hash
from embedfactory.report import plots
from embedfactory.store import Store

from .common import SHARD_TASK, logger, picture


@task(**{**SHARD_TASK, "persist_result": False}, task_run_name="eval-{model}")
def evaluate_model(store: str, model: str, baseline: str, eval_sets: list[str]) -> dict:
    target, sets = Store(store), resolve_eval_sets(eval_sets)
    log = logger().info
    base, tuned = score_model(target, baseline, sets, log), score_model(target, model, sets, log)
    rows = compare(base, tuned)
    report = {"model": model, "baseline": baseline, "rows": rows,
              "path": target.path("evals", f"report-{stable_hash(model, baseline, eval_sets, length=16)}.json")}
    png = plots.scores_chart(rows, f"{Path(model).parent.name or model} vs base")
    report["plot"] = report["path"][:-len(".json")] + ".png"
    target.write_bytes(report["plot"], png)
    target.write_json(report["path"], {**report, "base": base, "fine_tuned": tuned})
    create_table_artifact(rows, key="eval-report", description=f"{model} vs {baseline}")
    picture("eval-plot", "base vs fine-tuned", png, report["plot"])
    return report
