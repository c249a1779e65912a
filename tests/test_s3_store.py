"""STORE=s3://bucket/prefix against an S3-compatible server started on loopback (moto's): every output
of a run lands in the bucket (shards, manifests, the published set, the model, evaluations, Prefect's
persisted results), a re-run resumes from the bucket alone, and the published set loads with
`datasets`. Generation uses the real embedded llama.cpp server."""
import json

import boto3
import pytest
from moto.server import ThreadedMotoServer
from tiny import tiny

from embedfactory.publish.dataset import data_files
from embedfactory.store import Store
from flows.synth import synth


@pytest.fixture
def bucket(monkeypatch):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "factory",
                        "AWS_SECRET_ACCESS_KEY": "factory-secret", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
    client.create_bucket(Bucket="factory")
    yield client
    server.stop()


def keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="factory", Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.mark.slow
def test_a_run_on_s3_writes_everything_to_the_bucket_and_resumes_from_it(tmp_path, bucket, prefect_api,
                                                                         llm_server):
    endpoint, url = llm_server
    params = tiny("s3://factory/nightly", endpoint.model_copy(update={"base_url": url}))
    first = synth(params)

    run = f"nightly/runs/{first['run_id']}"
    stored = keys(bucket, "nightly/")
    for stage in ["personas", "tasks", "examples", "revised", "verdicts"]:
        assert f"{run}/{stage}/_manifest.json" in stored
        assert any(k.startswith(f"{run}/{stage}/part-") for k in stored)
    version = first["dataset"]["version"]
    assert f"nightly/datasets/synth/{version}/data/train-00000-of-00001.parquet" in stored
    assert first["training"]["model_path"].startswith("factory/nightly/models/")
    model = first["training"]["model_path"].split("/", 1)[1]
    assert f"{model}/model.safetensors" in stored and f"{model}/README.md" in stored
    assert any(k.startswith("nightly/evals/") for k in stored)
    results = keys(bucket, "nightly/_prefect/results/")
    assert len(results) >= len(first["summary"])  # one persisted result per shard task at least
    assert not list(tmp_path.iterdir())  # nothing local

    from datasets import load_dataset  # the published set, as a user reads it

    store = Store("s3://factory/nightly")
    loaded = load_dataset("parquet", data_files=data_files(store, first["dataset"]["path"]), split="train")
    assert loaded.num_rows == first["dataset"]["rows"] > 0
    assert loaded.column_names[:5] == ["anchor", "positive", "negative", "instruction", "task_type"]

    second = synth(params)  # from the bucket alone: every shard reused, no LLM call
    assert second["run_id"] == first["run_id"]
    assert all(row["llm_calls"] == 0 and row["reused"] == row["shards"] for row in second["summary"])
    assert second["dataset"]["sha256"] == first["dataset"]["sha256"]


def test_s3_settings_come_from_a_secret_block(bucket, prefect_api, monkeypatch):
    from prefect.blocks.system import Secret

    from tasks.common import load_store_secret

    endpoint = bucket.meta.endpoint_url
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    Secret(value={"aws_access_key_id": "factory", "aws_secret_access_key": "factory-secret",
                  "endpoint_url": endpoint}).save("factory-s3", overwrite=True)
    load_store_secret("factory-s3")
    store = Store("s3://factory/from-block")
    store.check_writable()
    store.write_json(store.path("probe.json"), {"ok": True})
    assert json.loads(bucket.get_object(Bucket="factory", Key="from-block/probe.json")["Body"].read()) == {"ok": True}
    Secret(value="not-json").save("factory-s3-bad", overwrite=True)
    with pytest.raises(ValueError, match="JSON object"):
        load_store_secret("factory-s3-bad")
