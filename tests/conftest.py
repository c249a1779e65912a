"""Shared fixtures. Prefect runs against a throwaway home and a temporary API server; the LLM
tests use the real embedded llama.cpp server with the shipped Qwen2.5-Coder-0.5B GGUF."""
from __future__ import annotations

import os
import tempfile

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def llm_server():
    """The embedded model server with the small embedded model (the plumbing tests need its speed, not
    the default generator's quality: tests/test_make_run.py runs that one), started once for the session."""
    from embedfactory.config import Endpoint
    from embedfactory.llm.server import serving
    from embedfactory.models import SMALL_LM

    with serving(Endpoint(model=SMALL_LM)) as (endpoint, base_url):
        yield endpoint, base_url
