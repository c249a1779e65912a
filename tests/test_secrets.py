"""API keys come from the environment or a Prefect Secret block, reach the server, and are never
written anywhere in the store."""
import pytest
from prefect import get_client
from prefect.blocks.system import Secret

from embedfactory.config import Endpoint, SynthParams
from fake_llm import FakeChatServer
from flows.synth import synth

KEY = "sk-test-4f9d1c77-never-store-me"


def files_containing(root, needle: str) -> list:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_key_from_a_secret_block_is_sent_and_never_stored(tmp_path, prefect_api, monkeypatch):
    monkeypatch.delenv("FACTORY_TEST_KEY", raising=False)
    Secret(value=KEY).save("factory-test-key", overwrite=True)
    with FakeChatServer() as server:
        endpoint = Endpoint(base_url=server.base_url, model="fake", api_key_env="FACTORY_TEST_KEY",
                            api_key_secret="factory-test-key")
        synth(SynthParams(store=str(tmp_path), generator=endpoint, train=None,
                          synth={"personas": 2, "tasks_per_persona": 1, "examples_per_task": 1,
                                 "task_mix": {"retrieval": 1}},
                          filter={"gates": [], "background_corpus": None}))  # made-up replies: rows to publish
    assert server.auth == {f"Bearer {KEY}"}
    assert (tmp_path / "runs").exists() and files_containing(tmp_path, KEY) == []
    assert files_containing(tmp_path, "factory-test-key")  # the block's name is fine to keep
    with get_client(sync_client=True) as client:
        logs, artifacts = client.read_logs(limit=200), client.read_artifacts(limit=200)
        runs = client.read_flow_runs(limit=50)
    assert logs and artifacts and runs
    assert not [log for log in logs if KEY in log.message]
    assert not [a for a in artifacts if KEY in str(a.data) or KEY in str(a.description)]
    assert not [r for r in runs if KEY in str(r.parameters)]
