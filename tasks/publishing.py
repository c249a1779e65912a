"""Prefect tasks that close a run: stage manifests, the published dataset and its quality report,
the summary."""
from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from embedfactory.llm import costs
from embedfactory.publish import hub
from embedfactory.publish.dataset import publish
from embedfactory.report import plots, quality, summary as report
from embedfactory.store import ShardRecord, Store
from embedfactory.synth import duplicates, pipeline

from .common import picture


@task(task_run_name="publish-{ctx.params.dataset_name}")
def publish_run(ctx: pipeline.RunContext, records: dict[str, list[ShardRecord]]) -> dict:
    for stage in pipeline.SYNTH_STAGES:
        ctx.stage_dir(stage.name).write_manifest(records[stage.name], {
            "version": stage.version, **pipeline.fingerprint_view(stage.config(ctx.params))})
    ctx.stage_dir("duplicates").write_manifest(records.get("duplicates", []), {
        "version": duplicates.VERSION, "near_duplicate_threshold": ctx.params.filter.near_duplicate_threshold,
        "dedupe_against": ctx.params.filter.dedupe_against})
    params, store = ctx.params, Store(ctx.params.store)
    dataset = publish(store, ctx.stage_dir("verdicts"), params.dataset_name, ctx.run_id,
                      card={"run_id": ctx.run_id, "params": params.model_dump(mode="json")},
                      min_rows=params.min_published_rows)
    quality_report = pipeline.run_quality(ctx, records)
    store.write_json(f"{dataset['path']}/quality.json", quality_report)
    png = plots.attribute_chart(quality_report["attributes"], f"attributes of {ctx.run_id}: recipe, drawn, kept")
    store.write_bytes(f"{dataset['path']}/attributes.png", png)
    picture("synth-attributes", "attribute shares: recipe, drawn, kept", png, f"{dataset['path']}/attributes.png")
    hub.write_dataset_card(store, dataset["path"])  # README.md: the folder loads with datasets, pushes to the Hub
    create_markdown_artifact(quality.to_markdown(quality_report), key="synth-quality",
                             description=f"Data quality of {ctx.run_id}")
    return {**dataset, "quality": quality_report}


@task
def summarize(ctx: pipeline.RunContext, records: dict[str, list[ShardRecord]],
              training: dict | None) -> list[dict]:
    spent = {stage: costs.spent({stage: [r for r in recs if r.run_token == ctx.run_token]}, ctx.params)
             for stage, recs in records.items()}
    table = report.stage_summary(records, ctx.run_token, training, spent)
    store = Store(ctx.params.store)
    store.write_json(store.path("runs", ctx.run_id, "summary.json"), table)
    create_table_artifact(table, key="synth-summary", description=f"Per-stage summary of {ctx.run_id}")
    print(report.format_table(table))
    return table
