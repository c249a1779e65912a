"""Where a training job keeps its latest checkpoint: one tar object in the store, so a preempted job
resumes from it on any worker."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

from ..store import Store


class StoreCheckpoints:
    """The latest checkpoint folder of one job (the Trainer's `checkpoint-<step>`), one tar object in the
    store, replaced atomically."""

    def __init__(self, store: Store, path: str):
        self.store, self.path = store, path

    def load(self, into: str) -> str | None:
        if not self.store.exists(self.path):
            return None
        with tarfile.open(fileobj=io.BytesIO(self.store.read_bytes(self.path))) as tar:
            tar.extractall(into, filter="data")
            return str(Path(into) / tar.getnames()[0].split("/")[0])

    def save(self, folder: str) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(folder, arcname=Path(folder).name)
        self.store.write_bytes(self.path, buffer.getvalue())

    def clear(self) -> None:
        self.store.delete(self.path)
