"""The embedded model server: llama.cpp's `llama-server` on loopback, for CPU runs.

It decodes several requests per step (slots with continuous batching), so on a CPU the weights are
read once per token for all of them; each slot keeps its last prompt's KV cache, so requests that
share a prompt prefix skip recomputing it. Production points the factory at `vllm serve` or the
OpenAI API instead; the client code is the same.

The process is watched: if it dies while a run uses it, the URL is marked dead (`liveness`) with
its exit status or signal and the tail of its log, and the client stops at once. A CPU backend
variant that dies with SIGILL while the server warms up (a machine that reports instructions it
cannot execute) is excluded for this machine and the server starts again with the next best one.
"""
from __future__ import annotations

import abc
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from ..config import EMBEDDED, Endpoint
from ..ids import stable_hash
from . import build, liveness
from .client import check_reachable


class ServerStartError(RuntimeError):
    """The embedded server could not be started; the message has its exit status and log tail."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class ChildServer(abc.ABC):
    """A model server as a child process on a free loopback port: start, health check, log, watch,
    stop. Subclasses say how to launch it and when it is ready. Use as a context manager."""

    name = "model server"

    def __init__(self, alias: str):
        self.alias = alias
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._proc: subprocess.Popen | None = None
        self._stopping = False
        self._log = tempfile.NamedTemporaryFile(prefix=f"{self.name.replace(' ', '-')}-", suffix=".log",
                                                delete=False)

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The argv that starts the server."""

    @abc.abstractmethod
    def ready(self) -> bool:
        """Whether the started server answers requests (may raise httpx errors while it loads)."""

    def cwd(self) -> str | None:
        return None

    def after_death(self, returncode: int) -> str:
        """What to do and say when the running process died (appended to the reason)."""
        return ""

    @property
    def log_path(self) -> Path:
        return Path(self._log.name)

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _launch(self, wait_s: float) -> None:
        """Start the process and wait until it is ready; raise ServerStartError if it exits first."""
        self._log.seek(0)
        self._log.truncate(0)  # a restart (after a SIGILL) logs from the top
        self._proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                      cwd=self.cwd(), start_new_session=True)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if (code := self._proc.poll()) is not None:
                raise ServerStartError(f"{self.name} exited during start-up ({describe_exit(code)}); "
                                       f"log {self.log_path}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.ready():
                    return
            time.sleep(0.25)
        self._kill()
        raise ServerStartError(f"{self.name} not ready after {wait_s:.0f} s; log {self.log_path}:\n"
                               f"{self.log_tail()}")

    def start(self, wait_s: float = 180.0) -> "ChildServer":
        self._launch(wait_s)
        self._watch()
        return self

    def _watch(self) -> None:
        """Mark the URL dead the moment the process exits unless we stopped it."""
        proc = self._proc
        liveness.clear(self.base_url)

        def wait() -> None:
            code = proc.wait()
            if not self._stopping:
                liveness.mark_dead(self.base_url, (
                    f"the embedded {self.name} (pid {proc.pid}) died: {describe_exit(code)}"
                    f"{self.after_death(code)}; log {self.log_path}:\n{self.log_tail()}"))

        threading.Thread(target=wait, name=f"watch-{self.port}", daemon=True).start()

    def _kill(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def stop(self) -> None:
        self._stopping = True
        self._kill()
        self._proc = None
        liveness.clear(self.base_url)

    def __enter__(self) -> "ChildServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LlamaServer(ChildServer):
    """llama.cpp's native `llama-server`: `slots` requests decoded together (continuous batching),
    `ctx_per_slot` tokens of context each, prompt-prefix reuse per slot, /slots and /metrics on."""

    name = "llama.cpp server"

    def __init__(self, model_path: Path, alias: str, slots: int = 4, ctx_per_slot: int = 4096,
                 threads: int | None = None, binary: Path | None = None, draft_path: Path | None = None):
        super().__init__(alias)
        self.model_path, self.slots, self.ctx_per_slot = Path(model_path), slots, ctx_per_slot
        self.draft_path = Path(draft_path) if draft_path else None  # speculative decoding's drafter
        self.threads = threads or os.cpu_count() or 2
        self.binary = Path(binary) if binary else build.server_binary()
        self.backend: str | None = None  # the CPU backend library it loaded
        self._backends_dir = tempfile.mkdtemp(prefix="llama-backends-")

    def command(self) -> list[str]:
        return [str(self.binary), "--model", str(self.model_path), "--alias", self.alias,
                "--host", "127.0.0.1", "--port", str(self.port),
                "--parallel", str(self.slots), "--ctx-size", str(self.slots * self.ctx_per_slot),
                "--no-kv-unified", "--cont-batching", "--threads", str(self.threads),
                "--threads-batch", str(self.threads), "--metrics", "--slots", "--no-webui",
                # a plain GGUF names no speculative type: without --spec-type the draft loads and is never asked
                *(["--model-draft", str(self.draft_path), "--spec-type", "draft-simple"] if self.draft_path else [])]

    def cwd(self) -> str:
        # ggml looks for CPU backends beside the binary, then in the working directory: the build
        # keeps them apart (cpu/), and each start links the allowed ones here
        return self._backends_dir

    def ready(self) -> bool:
        if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code != 200:
            return False
        # one short completion runs the matrix kernels for real: a bad CPU variant dies here, not
        # on the run's first request
        httpx.post(f"{self.base_url}/chat/completions", timeout=60, json={
            "model": self.alias, "max_tokens": 2, "temperature": 0,
            "messages": [{"role": "user", "content": "Say OK."}]}).raise_for_status()
        return True

    def start(self, wait_s: float = 180.0) -> "LlamaServer":
        backends = build.cpu_backends(self.binary)  # best first
        if forced := os.environ.get("EMBEDFACTORY_CPU_VARIANT"):
            backends = [b for b in backends if _variant(b) == forced]
            if not backends:
                raise ServerStartError(f"EMBEDFACTORY_CPU_VARIANT={forced}: no such CPU backend "
                                       f"({', '.join(_variant(b) for b in build.cpu_backends(self.binary))})")
        excluded = _excluded()
        while True:
            allowed = [b for b in backends if b.name not in excluded]
            if backends and not allowed:
                raise ServerStartError("every CPU backend of the embedded llama.cpp server died with "
                                       f"SIGILL on this machine ({', '.join(sorted(excluded))})")
            self._link_backends(allowed)
            try:
                self._launch(wait_s)
            except ServerStartError:
                if self._proc is None or self._proc.returncode != -signal.SIGILL or len(allowed) < 2:
                    raise
                # ggml loads the best backend the CPU reports; that one is what died: exclude it
                excluded.add(allowed[0].name)
                _save_excluded(excluded)
                print(f"embedded llama.cpp server: CPU backend {_variant(allowed[0])} died with SIGILL "
                      "on this machine (it reports instructions it cannot execute); excluded, starting "
                      "again with the next one", file=sys.stderr)
                continue
            self.backend = _mapped_backend(self._proc.pid)
            self._watch()
            return self

    def after_death(self, returncode: int) -> str:
        if returncode != -signal.SIGILL or not self.backend or self.backend == "libggml-cpu.so":
            return ""
        _save_excluded(_excluded() | {self.backend})  # a kernel the warm-up did not reach
        return f" in CPU backend {self.backend}, now excluded on this machine: run again"

    def _link_backends(self, allowed: list[Path]) -> None:
        folder = Path(self._backends_dir)
        for old in folder.glob("libggml-cpu*.so"):
            old.unlink()
        for lib in allowed:
            (folder / lib.name).symlink_to(lib)

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self._backends_dir, ignore_errors=True)

    def slot_states(self) -> list[dict]:
        return httpx.get(f"http://127.0.0.1:{self.port}/slots", timeout=5).json()


class LegacyLlamaCppServer(ChildServer):
    """`python -m llama_cpp.server` (llama-cpp-python, extra `legacy-server`): the previous embedded
    server, one request at a time. Kept for the throughput benchmark's comparison."""

    name = "llama-cpp-python server"

    def __init__(self, model_path: Path, alias: str, n_ctx: int = 4096, threads: int | None = None):
        super().__init__(alias)
        self.model_path, self.n_ctx = Path(model_path), n_ctx
        self.threads = threads or os.cpu_count() or 2

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
                "--model_alias", self.alias, "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads)]

    def ready(self) -> bool:
        return httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200


def _variant(lib: Path) -> str:
    stem = lib.name.removeprefix("libggml-cpu").removesuffix(".so").lstrip("-")
    return stem or "baseline"


def _mapped_backend(pid: int) -> str | None:
    """The CPU backend library a running server loaded (release builds do not log it)."""
    with contextlib.suppress(OSError):
        found = re.findall(r"(libggml-cpu[\w.-]*\.so)", Path(f"/proc/{pid}/maps").read_text())
        return found[0] if found else None
    return None


def _machine_key() -> str:
    """The CPU as this machine reports it (model and flags): a SIGILL verdict holds for it alone."""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
        flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
        return stable_hash(model and model.group(1), flags and flags.group(1), length=12)
    return "unknown"


def _excluded_file() -> Path:
    return build.cache_root() / f"sigill-{_machine_key()}.json"


def _excluded() -> set[str]:
    with contextlib.suppress(OSError, ValueError):
        return set(json.loads(_excluded_file().read_text()))
    return set()


def _save_excluded(names: set[str]) -> None:
    path = _excluded_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sorted(names)))


@contextlib.contextmanager
def serving(endpoint: Endpoint):
    """Yield (endpoint, base_url) ready for requests: the embedded server is started for the
    duration; any other endpoint is checked for reachability first, before anything is generated."""
    if endpoint.base_url != EMBEDDED:
        check_reachable(endpoint.base_url, endpoint)
        yield endpoint, endpoint.base_url
        return
    from ..models import embedded_gguf, served_gguf

    # the embedded server decodes `slots` requests together: more in flight would only queue there
    concurrency = (min(endpoint.concurrency, endpoint.slots) if "concurrency" in endpoint.model_fields_set
                   else endpoint.slots)
    endpoint = endpoint.model_copy(update={"concurrency": concurrency})
    draft = embedded_gguf(endpoint.draft_model) if endpoint.draft_model else None
    with LlamaServer(served_gguf(endpoint.model), alias=endpoint.model, slots=endpoint.slots,
                     ctx_per_slot=endpoint.ctx_per_slot, draft_path=draft) as server:
        yield endpoint, server.base_url
