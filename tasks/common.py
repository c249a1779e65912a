"""What every shard task shares: retries, a cache key made of the shard's fingerprint, results
persisted inside the store (so the cache lives and dies with the data), and progress reporting."""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

import openai
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.filesystems import WritableFileSystem

from embedfactory.ids import stable_hash
from embedfactory.llm.costs import BudgetExceeded
from embedfactory.llm.liveness import ServerDied
from embedfactory.outcomes import ExpectedStop
from embedfactory.report.progress import Meter, Throttle, stage_meter
from embedfactory.store import Store

from . import limits  # noqa: F401  (installs Prefect's global concurrency limits as the endpoints' limits)

RETRIES = 2
RETRY_DELAY_S = [5, 30]


class StoreResults(WritableFileSystem):
    """Prefect's persisted task results inside the factory's store (`<store>/_prefect/results/`), on
    the same filesystem as the data they describe: a local folder or an S3 bucket. So the cache lives
    and dies with the data, and a worker on another machine resumes a run from the bucket alone."""

    _block_type_name = "Embedfactory Store Results"
    store: str

    def _path(self, key: str) -> str:
        return Store(self.store).path("_prefect", "results", key)

    # Prefect calls the sync pair with `_sync=True` and the async pair from async code.
    def read_path(self, path: str, _sync: bool = True) -> bytes:
        return Store(self.store).read_bytes(self._path(path))

    def write_path(self, path: str, content: bytes, _sync: bool = True) -> str:
        Store(self.store).write_bytes(self._path(path), content)
        return path

    async def aread_path(self, path: str) -> bytes:
        return await asyncio.to_thread(self.read_path, path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return await asyncio.to_thread(self.write_path, path, content)


def result_storage(store_uri: str) -> StoreResults:
    block = StoreResults(store=store_uri)
    block.save(f"embedfactory-results-{stable_hash(store_uri, length=12)}", overwrite=True)
    return block


def load_store_secret(name: str | None) -> None:
    """S3 credentials kept in a Prefect Secret block (JSON with any of aws_access_key_id,
    aws_secret_access_key, aws_session_token, endpoint_url, region) into this process's environment,
    where the store's S3 client reads them; without a block the environment is used as it is."""
    from prefect.blocks.system import Secret

    if not name:
        return
    value = Secret.load(name).get()
    if not isinstance(value, dict):
        raise ValueError(f"Secret block {name!r} must hold a JSON object of S3 settings")
    for key, env in STORE_SECRET_ENV.items():
        if value.get(key):
            os.environ[env] = str(value[key])


STORE_SECRET_ENV = {"aws_access_key_id": "AWS_ACCESS_KEY_ID", "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
                    "aws_session_token": "AWS_SESSION_TOKEN", "endpoint_url": "AWS_ENDPOINT_URL",
                    "region": "AWS_REGION"}


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


def progress(label: str, unit: str = "rows", stage: tuple[str, str, str] | None = None, shards: int | None = None,
             clock=time.monotonic):
    """A callback (done, total[, loss]) reporting rows (or steps) done, rate and ETA: a bar on an
    interactive terminal, otherwise a log line at each tenth and at least every 30 s, and a Prefect
    progress artifact in the UI. `stage`: (run_id, stage, shard key), to add the whole stage's line
    (its `shards` shards in this process)."""
    log, meter, throttle = logger(), Meter(label, unit, clock), Throttle(clock=clock)
    whole = stage_meter(stage[0], stage[1], shards, clock) if stage else None
    artifact = create_progress_artifact(0.0, description=label) if TaskRunContext.get() else None
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc=label, unit=unit[:-1] if unit.endswith("s") else unit, leave=False)

    def report(done: int, total: int, loss: float | None = None) -> None:
        meter.update(done, total)
        if whole is not None:
            whole.update(stage[2], done, total)
        extra = f", loss {loss:.4f}" if loss is not None else ""
        if bar is not None:
            bar.total, bar.n = total, done
            bar.set_postfix_str(extra.lstrip(", "), refresh=True)
            if done >= total:
                bar.close()
        if not throttle.due(done, total):
            return
        line = meter.line(extra) + (f" | {whole.line()}" if whole is not None else "")
        if bar is None or done >= total:
            log.info("%s", line)
        if artifact is not None:
            update_progress_artifact(artifact, 100.0 * done / max(total, 1), description=line, _sync=True)

    return report


# failures a retry would meet again: bad data or parameters, a missing file, a refused key, a dead
# embedded server, a spent budget; Prefect's retries are kept for the transient rest
DETERMINISTIC = (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError,
                 FileNotFoundError, PermissionError, ServerDied, BudgetExceeded, openai.BadRequestError,
                 openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError,
                 openai.UnprocessableEntityError)


def worth_retrying(task, task_run, state) -> bool:
    """Retry a shard, training or evaluation only for what may pass next time (a server or store
    that was away, a timeout); a deterministic failure fails the run at once, with its message."""
    return not isinstance(state.data, DETERMINISTIC)


SHARD_TASK = {"retries": RETRIES, "retry_delay_seconds": RETRY_DELAY_S, "persist_result": True,
              "retry_condition_fn": worth_retrying}


def picture(key: str, title: str, png: bytes, path: str) -> None:
    """A markdown artifact showing a PNG the run stored at `path` (inline, so the UI needs no access
    to the store)."""
    import base64

    if TaskRunContext.get() or _in_flow():
        create_markdown_artifact(f"### {title}\n\n![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"
                                 f"\n\n`{path}`", key=key, description=title)


def _in_flow() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


class _WithoutExpectedStops(logging.Filter):
    """Leaves out the records that carry an ExpectedStop (the task's and the flow's "failed with
    exception", each with a traceback): the command prints its message once. Console handlers only:
    the Prefect UI still gets them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ExpectedStop))


def run_cli(call):
    """A flow run from its command line: an ExpectedStop (too few rows, budget reached, pre-flight)
    ends it with its message printed once and a non-zero exit; anything else keeps its traceback."""
    from prefect.logging.handlers import PrefectConsoleHandler

    quiet = _WithoutExpectedStops()
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, (PrefectConsoleHandler, logging.StreamHandler)) and quiet not in handler.filters:
                handler.addFilter(quiet)
    try:
        return call()
    except ExpectedStop as exc:
        print(f"\n{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
