"""The embedded llama-server for real: slots decode requests together, its death stops a run at once,
and a CPU backend that dies with SIGILL is excluded and the server starts with the next one."""
from __future__ import annotations

import concurrent.futures
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field

from embedfactory.config import Endpoint
from embedfactory.llm import build, liveness
from embedfactory.llm.client import ChatClient, Request
from embedfactory.llm.server import LlamaServer, ServerStartError
from embedfactory.models import SMALL_LM, local_gguf
from embedfactory.schemas import RetrievalExample

pytestmark = pytest.mark.slow


def _ask(base_url: str, i: int, max_tokens: int = 48) -> dict:
    response = httpx.post(f"{base_url}/chat/completions", timeout=300, json={
        "model": SMALL_LM, "max_tokens": max_tokens, "temperature": 1.0, "seed": i,
        "messages": [{"role": "user", "content": f"Write a short story about the number {i}."}]})
    response.raise_for_status()
    return response.json()


def test_the_slots_decode_requests_together(llm_server):
    """Server-side proof, not timing: /slots shows more than one slot processing at the same moment."""
    endpoint, base_url = llm_server
    assert endpoint.concurrency == endpoint.slots >= 2  # the client's concurrency follows the slots
    root = base_url.removesuffix("/v1")
    busy_at_once, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            slots = httpx.get(f"{root}/slots", timeout=5).json()
            busy_at_once.append(sorted(s["id"] for s in slots if s["is_processing"]))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with concurrent.futures.ThreadPoolExecutor(endpoint.slots) as pool:
        replies = list(pool.map(lambda i: _ask(base_url, i), range(endpoint.slots)))
    stop.set()
    watcher.join()
    assert all(r["choices"][0]["message"]["content"] for r in replies)
    most = max(busy_at_once, key=len)
    print(f"slots processing together at most: {most} of {endpoint.slots}")
    assert len(most) >= 2


def test_shared_prompt_prefixes_are_reused(llm_server):
    """Prompts that share a system message: the server reports the shared tokens as cached
    (usage.prompt_tokens_details.cached_tokens, which the client adds up per reply)."""
    endpoint, base_url = llm_server
    system = {"role": "system", "content": "You write training examples as JSON objects. " * 20}
    usages = []
    for i in range(3):
        response = httpx.post(f"{base_url}/chat/completions", timeout=120, json={
            "model": endpoint.model, "max_tokens": 2, "temperature": 0,
            "messages": [system, {"role": "user", "content": f"Write an example about topic number {i}."}]})
        usages.append(response.json()["usage"])
    cached = [u["prompt_tokens_details"]["cached_tokens"] for u in usages]
    print("prompt tokens", [u["prompt_tokens"] for u in usages], "cached", cached)
    shared = usages[0]["prompt_tokens"] - 20  # the system message; the user lines differ at the end
    assert shared > 150 and all(c >= shared for c in cached[1:])


def test_a_killed_server_fails_the_client_at_once_with_its_signal_and_log():
    with LlamaServer(local_gguf(), alias=SMALL_LM, slots=2, ctx_per_slot=2048) as server:
        endpoint = Endpoint(base_url=server.base_url, concurrency=2)
        client = ChatClient(endpoint, server.base_url)
        threading.Timer(2.0, os.kill, (server.pid, signal.SIGKILL)).start()
        started = time.monotonic()
        with pytest.raises(liveness.ServerDied) as died:
            client.run_sync([Request([{"role": "user", "content": f"Write a long essay on {i}."}],
                                     RetrievalExample, seed=i) for i in range(8)])
        elapsed = time.monotonic() - started
    message = str(died.value)
    print(message[:300], f"\n(stopped {elapsed:.1f} s after the requests began)")
    assert "killed by SIGKILL" in message and "llama" in message.lower()
    assert elapsed < 10


def _fake_sigill_server(tmp_path: Path, real: Path, bad: str) -> Path:
    """Fault injection: a `llama-server` in front of the real one that, like a VM whose CPU reports
    instructions it cannot execute, dies with SIGILL after loading the CPU backend `bad` when that
    backend is offered; otherwise it runs the real server."""
    (tmp_path / "bin").mkdir(parents=True)
    (tmp_path / "cpu").mkdir()
    for lib in build.cpu_backends(real):
        (tmp_path / "cpu" / lib.name).symlink_to(lib)
    script = tmp_path / "bin" / "llama-server"
    script.write_text(f"""#!/bin/sh
if [ -e "$(pwd)/{bad}" ]; then
  kill -ILL $$
fi
exec {real} "$@"
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_a_cpu_backend_that_dies_with_sigill_is_excluded_and_the_next_one_serves(tmp_path, monkeypatch):
    real, model = build.server_binary(), local_gguf()
    backends = [lib.name for lib in build.cpu_backends(real)]  # best first
    if len(backends) < 2:
        pytest.skip("this build has one CPU backend")
    monkeypatch.setenv("EMBEDFACTORY_CACHE", str(tmp_path / "cache"))  # the per-machine verdicts
    best = backends[0]  # the fake dies whenever the best backend is offered
    fake = _fake_sigill_server(tmp_path / "root", real, best)
    with LlamaServer(model, alias=SMALL_LM, slots=1, ctx_per_slot=1024, binary=fake) as server:
        assert server.backend in backends[1:]  # the next best serves
        assert _ask(server.base_url, 0, max_tokens=4)["choices"]
    # the verdict is kept for this machine: the next start skips the bad backend at once
    with LlamaServer(model, alias=SMALL_LM, slots=1, ctx_per_slot=1024, binary=fake) as again:
        assert again.backend != best
        assert "SIGILL" not in again.log_tail()


def test_every_cpu_backend_of_the_build_serves(monkeypatch):
    """What a machine without AVX-512 (haswell) or without AVX2 (baseline) would load: each backend
    forced in turn answers a completion, so every variant is a working build, not just compiled."""
    model = local_gguf()
    variants = [lib.name.removeprefix("libggml-cpu").removesuffix(".so").lstrip("-") or "baseline"
                for lib in build.cpu_backends(build.server_binary())]
    assert "baseline" in variants and len(variants) == len(build.variants())
    flags = set(open("/proc/cpuinfo").read().split()) if os.path.exists("/proc/cpuinfo") else set()
    cpu_names = {"SSE42": "sse4_2", "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni"}
    runnable = [v for v in variants if all(cpu_names.get(f, f.lower()) in flags
                                           for f in build.variants()["" if v == "baseline" else v])]
    assert "baseline" in runnable  # ggml refuses a backend the CPU cannot run: only those it can are forced
    for variant in runnable:
        monkeypatch.setenv("EMBEDFACTORY_CPU_VARIANT", variant)
        with LlamaServer(model, alias=SMALL_LM, slots=1, ctx_per_slot=1024) as server:
            assert server.backend == (f"libggml-cpu-{variant}.so" if variant != "baseline" else "libggml-cpu.so")
            assert _ask(server.base_url, 1, max_tokens=4)["choices"][0]["message"]["content"]


def test_a_server_that_cannot_start_says_why(tmp_path):
    bad_model = tmp_path / "not-a-model.gguf"
    bad_model.write_bytes(b"GGUF but not really")
    with pytest.raises(ServerStartError, match="exit status|exited") as failed:
        LlamaServer(bad_model, alias="x", slots=1, ctx_per_slot=1024).start(wait_s=60)
    assert "not-a-model.gguf" in str(failed.value)  # the log tail names the file


class Greeting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str = Field(max_length=20)
    friendly: bool


def test_the_embedded_endpoint_enforces_the_json_schema(llm_server):
    """Asked for prose, the model still answers with the schema's object: llama-server turned the
    `json_schema` response format into a grammar (no fallback needed)."""
    endpoint, base_url = llm_server
    assert endpoint.structured_output == "json_schema"
    replies = ChatClient(endpoint, base_url).run_sync([Request(
        [{"role": "user", "content": f"Tell me a long story about dragon number {i}."}], Greeting, seed=i)
        for i in range(2)])
    print([r.raw for r in replies])
    assert all(r.ok and r.attempts == 1 and not r.fallback for r in replies)


def test_build_is_portable_and_cached():
    info = (build.install_dir() / "build.json").read_text()
    assert '"GGML_NATIVE": "OFF"' in info and '"GGML_BACKEND_DL": "ON"' in info
    assert build.build() == build.install_dir()  # a finished build is reused, not rebuilt
    binary = build.server_binary()
    out = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True).stdout
    assert "$ORIGIN" in out  # relocatable: its libraries are found beside it
    assert not list(binary.parent.glob("libggml-cpu*.so"))  # backends live apart, offered per start


def _children(name: str) -> list[int]:
    """Pids of this process's children whose command is `name`."""
    out = subprocess.run(["pgrep", "-P", str(os.getpid()), "-x", name], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_the_synth_flow_stops_at_once_when_its_server_dies(tmp_path, prefect_api):
    """`make run`'s path: the flow starts the embedded server itself; SIGKILL it while the run is
    generating and the run fails within seconds with the signal and the log, no shard retried."""
    import asyncio

    from prefect.client.orchestration import get_client
    from flows.synth import synth
    from tiny import tiny

    killed = {}

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            for pid in _children("llama-server"):
                argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
                port = argv[argv.index("--port") + 1]
                try:  # busy: two slots generating (the launcher's readiness probe uses one)
                    slots = httpx.get(f"http://127.0.0.1:{port}/slots", timeout=5).json()
                    busy = isinstance(slots, list) and sum(s["is_processing"] for s in slots) >= 2
                except httpx.HTTPError:
                    busy = False
                if busy:
                    os.kill(pid, signal.SIGKILL)
                    killed["at"] = time.monotonic()
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    state = synth(tiny(tmp_path, Endpoint(), personas=4), return_state=True)
    failed_at = time.monotonic()
    killer.join()
    assert killed and state.is_failed()
    with pytest.raises(liveness.ServerDied, match="killed by SIGKILL") as died:
        state.result()
    print(str(died.value)[:400], f"\nrun failed {failed_at - killed['at']:.1f} s after the kill")
    assert failed_at - killed["at"] < 15  # a retry would wait 5 s, then 30 s, plus transport retries

    async def task_runs():
        async with get_client() as client:
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))

    runs = asyncio.run(task_runs())
    failed = [r for r in runs if r.state and r.state.is_failed()]
    assert failed and all(r.run_count == 1 for r in failed)  # failed at once, never retried


def test_the_larger_generator_decodes_with_the_small_one_drafting():
    """`draft_model`: llama-server loads the 0.5B beside the 1.5B and the 1.5B verifies its drafts
    (its /metrics count drafts, drafted and accepted tokens: a draft model that is loaded but never
    asked, as without `--spec-type`, leaves them at 0)."""
    from embedfactory.llm.server import serving

    endpoint = Endpoint(model="qwen2.5-coder-1.5b-instruct", draft_model=SMALL_LM, slots=1, concurrency=1)
    with serving(endpoint) as (served, url):
        reply = _ask(url, 1, max_tokens=48)
        metrics = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=5).text
    counts = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line.startswith("llamacpp:spec_decode_num")}
    print(counts)
    assert reply["choices"][0]["message"]["content"] and counts["llamacpp:spec_decode_num_drafts_total"] > 0
    assert 0 < counts["llamacpp:spec_decode_num_accepted_tokens_total"] <= counts["llamacpp:spec_decode_num_draft_tokens_total"]
