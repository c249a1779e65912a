"""The embedded model server: llama.cpp's OpenAI-compatible server on loopback, for CPU runs.

Production points the factory at `vllm serve` or the OpenAI API instead; the client code is the same.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ..config import EMBEDDED, Endpoint
from .client import check_reachable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    """`python -m llama_cpp.server` as a child process; use as a context manager."""

    def __init__(self, model_path: Path, alias: str, n_ctx: int = 4096, threads: int | None = None):
        self.model_path, self.alias, self.n_ctx = Path(model_path), alias, n_ctx
        self.threads = threads or os.cpu_count() or 2
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)

    def start(self, wait_s: float = 120.0) -> "LlamaCppServer":
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
               "--model_alias", self.alias, "--host", "127.0.0.1", "--port", str(self.port),
               "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads)]
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self._proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return self
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"llama.cpp server not ready after {wait_s}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        return Path(self._log.name).read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> "LlamaCppServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def serving(endpoint: Endpoint):
    """Yield (endpoint, base_url) ready for requests: the embedded server is started for the
    duration; any other endpoint is checked for reachability first, before anything is generated."""
    if endpoint.base_url != EMBEDDED:
        check_reachable(endpoint.base_url, endpoint)
        yield endpoint, endpoint.base_url
        return
    from ..models import local_gguf

    # llama.cpp takes the schema inline in a json_object response_format, and serves one request at
    # a time: a deep queue would only turn waiting into timeouts.
    endpoint = endpoint.model_copy(update={"structured_output": "json_object",
                                           "concurrency": min(endpoint.concurrency, 2)})
    with LlamaCppServer(local_gguf(), alias=endpoint.model) as server:
        yield endpoint, server.base_url
