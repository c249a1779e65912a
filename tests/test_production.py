"""The production path for real: `prefect server start` on loopback (SQLite, temporary PREFECT_HOME),
process work pools `cpu` and `gpu`, `prefect deploy --all`, workers, `prefect deployment run synth/main`.

- fan-out: synth/main on the cpu pool hands every generation shard to synth-shard/gpu flow runs on
  the gpu pool (real llama.cpp server as the generator);
- crash-resume: the worker and its flow run are SIGKILLed mid-generation; a rerun completes with no
  row lost or duplicated and no committed shard regenerated (LLM calls counted by a fake server);
- two concurrent runs with different run ids keep to their own folders.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pyarrow.parquet as pq
import pytest

from embedfactory.config import Endpoint, SynthParams
from fake_llm import FakeChatServer
from tiny import tiny

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
           "EMBEDFACTORY_HOME": str(ROOT), "EMBEDFACTORY_STORE": str(home / "unused-store")}
    log = open(home / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not _healthy(env["PREFECT_API_URL"]):
            assert server.poll() is None and time.monotonic() < deadline, (home / "server.log").read_text()
            time.sleep(1)
        prefect(env, "work-pool", "create", "cpu", "--type", "process")
        prefect(env, "work-pool", "create", "gpu", "--type", "process")
        prefect(env, "work-pool", "set-concurrency-limit", "gpu", "1")  # one GPU
        prefect(env, "work-pool", "create", "gpu-k8s", "--type", "kubernetes",  # the server accepts it
                "--base-job-template", "infra/k8s/gpu-base-job-template.json")
        out = prefect(env, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
        for name in ("synth/main", "synth-shard/gpu", "train/main", "eval/main"):
            assert f"Deployment '{name}' successfully created" in out
        yield env
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def prefect(env: dict, *args: str, timeout: float = 120) -> str:
    done = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


class Worker:
    """`prefect worker start` in its own process group; `kill()` SIGKILLs it and its flow runs."""

    def __init__(self, env: dict, pool: str, log: Path):
        self.log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                                      "--type", "process"], env=env, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        tree = [self.proc.pid, *(p.pid for p in psutil.Process(self.proc.pid).children(recursive=True))]
        for pid in tree:
            with_ok(os.kill, pid, signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.kill()


def with_ok(fn, *args) -> None:
    try:
        fn(*args)
    except ProcessLookupError:
        pass


def run_args(params: SynthParams, watch: bool = True) -> list[str]:
    args = ["deployment", "run", "synth/main", "--params", json.dumps({"params": params.model_dump(mode="json")})]
    return [*args, "--watch", "--watch-timeout", "900"] if watch else args


def quiet_by(llm: FakeChatServer, seconds: float, within: float = 120) -> None:
    """Wait until `llm` has had no request for `seconds` (a killed client's requests, already sent, can
    reach a busy machine's server a while later), at most `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() - max(llm.arrivals, default=0.0) < seconds or llm.in_flight:
        assert time.monotonic() < deadline, "the fake server never went quiet"
        time.sleep(0.2)


def records(store: Path, run_id: str) -> dict[str, dict]:
    """Every commit record of the run: 'stage/key' -> record."""
    return {f"{p.parent.parent.name}/{p.stem}": json.loads(p.read_text())
            for p in (store / "runs" / run_id).glob("*/_shards/*.json")}


def fake_params(store: Path, server: FakeChatServer, **update) -> SynthParams:
    endpoint = Endpoint(base_url=server.base_url, model="fake", concurrency=2)
    return SynthParams(store=str(store), generator=endpoint, train=None,
                       filter={"gates": [], "background_corpus": None},  # canned replies: plumbing only
                       synth={"personas": 6, "personas_per_shard": 1, "tasks_per_persona": 1, "examples_per_task": 2, "revise": True,
                              "task_mix": {"retrieval": 1}}, **update)


def test_synth_main_fans_generation_out_to_the_gpu_pool(server_env, tmp_path, llm_server):
    endpoint, url = llm_server
    params = tiny(tmp_path / "store", endpoint.model_copy(update={"base_url": url}), personas_per_shard=1)
    params = params.model_copy(update={"train": None, "fan_out": "synth-shard/gpu"})
    with Worker(server_env, "cpu", tmp_path / "cpu.log"), Worker(server_env, "gpu", tmp_path / "gpu.log"):
        out = prefect(server_env, *run_args(params), timeout=1000)
    assert "Completed" in out

    store = Path(params.store)
    (run_dir,) = (store / "runs").iterdir()
    summary = {row["stage"]: row for row in json.loads((run_dir / "summary.json").read_text())}
    assert summary["tasks"]["shards"] == summary["revised"]["shards"] == 2  # two persona chunks
    assert all(summary[s]["llm_calls"] > 0 for s in ("personas", "tasks", "examples", "revised"))
    (dataset,) = (store / "datasets" / "synth").glob("run-*/data/train-00000-of-00001.parquet")
    assert pq.read_table(dataset).num_rows == summary["verdicts"]["rows_out"] > 0

    shard_runs = _flow_runs(server_env, "synth-shard")
    assert len(shard_runs) == 3  # the persona brainstorm, then one per persona chunk
    assert all(r["state"] == "COMPLETED" and r["work_pool"] == "gpu" for r in shard_runs)

    artifacts = _api(server_env, "[[a.key, a.type] for a in c.read_artifacts()]")
    assert ["synth-summary", "table"] in artifacts and ["synth-quality", "markdown"] in artifacts
    assert sum(kind == "progress" for _, kind in artifacts) >= 6  # one per shard of each long stage
    names = set(_api(server_env, "[t.name for t in c.read_task_runs()]"))
    assert {"personas-00000", "tasks-00001", "revised-00001", "verdicts-00000", "personas-00000 on pool",
            "tasks+examples+revised-00001 on pool"} <= names


def _api(env: dict, expression: str):
    """Evaluate `expression` with a sync Prefect client `c` against the test's server, as JSON."""
    script = ("import json; from prefect import get_client\n"
              "with get_client(sync_client=True) as c:\n"
              f"    print(json.dumps({expression}, default=str))")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def _flow_runs(env: dict, flow_name: str) -> list[dict]:
    runs = _api(env, "[{'flow': {f.id: f.name for f in c.read_flows()}[r.flow_id], 'state': r.state.type.value, "
                     "'work_pool': r.work_pool_name} for r in c.read_flow_runs()]")
    return [r for r in runs if r["flow"] == flow_name]


def test_a_killed_worker_loses_nothing_and_the_rerun_regenerates_no_finished_shard(server_env, tmp_path):
    with FakeChatServer(latency_s=0.4) as llm:
        params = fake_params(tmp_path / "store", llm, run_id="crash")
        with Worker(server_env, "cpu", tmp_path / "worker-1.log") as worker:
            prefect(server_env, *run_args(params, watch=False))
            deadline = time.monotonic() + 600
            while not 1 <= sum(k.startswith("revised/") for k in records(tmp_path / "store", "crash")) < 6:
                assert time.monotonic() < deadline, "generation never got under way"
                time.sleep(0.2)
            worker.kill()  # the machine dies: worker and flow run, no cleanup
            quiet_by(llm, seconds=2)  # requests already on the wire arrive and are counted as the first run's
        before, calls_before = records(tmp_path / "store", "crash"), len(llm.requests)
        assert any(k.startswith("examples/") for k in before) and "verdicts/00000" not in before

        with Worker(server_env, "cpu", tmp_path / "worker-2.log"):
            assert "Completed" in prefect(server_env, *run_args(params), timeout=1000)
        calls_after = len(llm.requests) - calls_before

    after = records(tmp_path / "store", "crash")
    for key, record in before.items():  # nothing finished was made again
        assert (after[key]["run_token"], after[key]["sha256"]) == (record["run_token"], record["sha256"]), key
    new = [r for k, r in after.items() if k not in before]
    assert {r["run_token"] for r in new} and not {r["run_token"] for r in new} & {r["run_token"] for r in before.values()}
    assert calls_after == sum(r["llm_calls"] for r in new) > 0  # every call of the rerun went to unfinished shards

    run_dir = tmp_path / "store" / "runs" / "crash"
    for stage in ("tasks", "examples", "revised", "verdicts"):
        assert len(list((run_dir / stage / "_shards").glob("*.json"))) == 6, stage
    tasks = pq.read_table(run_dir / "tasks").to_pylist()
    examples = pq.read_table(run_dir / "examples").to_pylist()
    revised = pq.read_table(run_dir / "revised").to_pylist()
    assert len(examples) == len({r["example_id"] for r in examples}) == 2 * len(tasks) > 0  # 2 per task
    assert sorted(r["example_id"] for r in revised) == sorted(r["example_id"] for r in examples)
    dataset = pq.read_table(tmp_path / "store" / "datasets" / "synth" / "crash" / "data" / "train-00000-of-00001.parquet")
    ids = dataset.column("example_id").to_pylist()
    assert len(ids) == len(set(ids)) > 0


def test_concurrent_runs_with_different_run_ids_keep_to_their_own_folders(server_env, tmp_path):
    with FakeChatServer(latency_s=0.05) as llm, Worker(server_env, "cpu", tmp_path / "worker.log"):
        runs = {run_id: subprocess.Popen([sys.executable, "-m", "prefect", *run_args(
            fake_params(tmp_path / "store", llm, run_id=run_id))], env=server_env, cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for run_id in ("night-a", "night-b")}
        outputs = {run_id: proc.communicate(timeout=1000)[0] for run_id, proc in runs.items()}
    tokens = {}
    for run_id, out in outputs.items():
        assert "Completed" in out, out[-3000:]
        found = {r["run_token"] for r in records(tmp_path / "store", run_id).values()}
        assert len(found) == 1, (run_id, found)  # every shard in the folder made by this run alone
        tokens[run_id] = found.pop()
        manifest = json.loads((tmp_path / "store" / "runs" / run_id / "revised" / "_manifest.json").read_text())
        assert manifest["run_id"] == run_id
        assert (tmp_path / "store" / "datasets" / "synth" / run_id / "data" / "train-00000-of-00001.parquet").exists()
    assert tokens["night-a"] != tokens["night-b"]
