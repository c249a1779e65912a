"""What every shard task shares: retries, a cache key made of the shard's fingerprint, results
persisted inside the store (so the cache lives and dies with the data), and progress reporting."""
from __future__ import annotations

import logging
import os

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.filesystems import LocalFileSystem

from embedfactory.ids import stable_hash
from embedfactory.store import Store

RETRIES = 2
RETRY_DELAY_S = [5, 30]


def result_storage(store_uri: str):
    """Prefect's persisted task results kept beside the data they describe."""
    store = Store(store_uri)
    if not store.is_local:
        return None  # object stores: Prefect's default result storage (configure it per deployment)
    block = LocalFileSystem(basepath=store.path("_prefect", "results"))
    block.save(f"embedfactory-results-{stable_hash(block.basepath, length=12)}", overwrite=True)
    return block


def load_api_keys(*endpoints) -> None:
    """Put keys kept in Prefect Secret blocks where the client reads them: the process environment.
    Keys never travel as parameters, so they never reach the UI, the store or the cache keys."""
    from prefect.blocks.system import Secret

    for endpoint in endpoints:
        if endpoint is not None and endpoint.api_key_secret:
            os.environ[endpoint.api_key_env] = Secret.load(endpoint.api_key_secret).get()


def cache_key(*parts) -> str:
    return stable_hash(*parts, length=32)


def logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # called outside a flow, e.g. from a plain test
        return logging.getLogger("embedfactory")


def progress(label: str):
    """A callback (done, total) that logs every tenth and drives a progress artifact in the UI."""
    log = logger()
    artifact = None
    if TaskRunContext.get():
        artifact = create_progress_artifact(0.0, description=label)
    last_tenth = -1

    def report(done: int, total: int) -> None:
        nonlocal last_tenth
        tenth = (10 * done) // max(total, 1)
        if tenth == last_tenth:
            return
        last_tenth = tenth
        log.info("%s: %d/%d", label, done, total)
        if artifact is not None:
            update_progress_artifact(artifact, 100.0 * done / max(total, 1), _sync=True)

    return report


SHARD_TASK = {"retries": RETRIES, "retry_delay_seconds": RETRY_DELAY_S, "persist_result": True}
