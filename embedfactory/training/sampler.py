"""Semi-homogeneous task batches (KaLM-Embedding, arXiv 2501.01028).

Each batch takes `homogeneous_ratio` of its rows from one task and fills the rest from the other
tasks, so in-batch negatives are hard (same task) without being all alike. No text appears twice in
a batch (a repeated positive would be a false negative), and every row is used once per epoch: a
row that would repeat a text waits for a later batch.

`RowBatchSampler` gives the Trainer these batches, or shuffled ones, planned anew each epoch from the
training seed and the epoch's number, so a resumed run replays the batches of an uninterrupted one.
"""
from __future__ import annotations

import random
from collections import deque

from sentence_transformers.base.sampler import DefaultBatchSampler


def _texts(row: dict) -> set[str]:
    return {t for t in (row.get("anchor"), row.get("positive"), row.get("negative")) if t}


def semi_homogeneous_batches(rows: list[dict], task_key: str, batch_size: int, homogeneous_ratio: float,
                             seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    by_task: dict[str, deque[int]] = {}
    for i in rng.sample(range(len(rows)), len(rows)):
        by_task.setdefault(rows[i][task_key], deque()).append(i)
    home_size = round(homogeneous_ratio * batch_size)
    batches = []
    while any(by_task.values()):
        tasks = [t for t, q in by_task.items() if q]
        home = rng.choices(tasks, weights=[len(by_task[t]) for t in tasks])[0]
        batch = _Batch(rows)
        batch.take(by_task[home], home_size)
        others = [t for t in tasks if t != home]
        rng.shuffle(others)
        while len(batch.rows) < batch_size:  # the rest round-robin over the other tasks
            before = len(batch.rows)
            for t in others:
                batch.take(by_task[t], min(batch_size, len(batch.rows) + 1))
            if len(batch.rows) == before:
                break
        batch.take(by_task[home], batch_size)  # too few other rows: top up from the home task
        # only rows whose own texts collide remain: give each its own batch
        batches.append(batch.rows or [by_task[home].popleft()])
    return batches


class _Batch:
    """Rows gathered so far and their texts; `take` skips rows that would repeat a text."""

    def __init__(self, source: list[dict]):
        self.source, self.rows, self.seen = source, [], set()

    def take(self, queue: deque[int], limit: int) -> None:
        for _ in range(len(queue)):
            if len(self.rows) >= limit:
                return
            i = queue.popleft()
            if _texts(self.source[i]) & self.seen:
                queue.append(i)  # waits for a later batch
                continue
            self.rows.append(i)
            self.seen.update(_texts(self.source[i]))


def batches(rows: list[dict], size: int, seed: int, homogeneous_ratio: float | None = None,
            key: str = "task_type") -> list[list[int]]:
    """One epoch's batches of row indices: semi-homogeneous by `key` when `homogeneous_ratio` is set,
    else shuffled; batches of one row (no in-batch negative) left out."""
    if homogeneous_ratio:
        if missing := sum(not r.get(key) for r in rows):
            raise ValueError(f"homogeneous_ratio groups rows by {key!r}, which {missing} of {len(rows)} "
                             "rows lack; set homogeneous_key to a column the data has")
        plan = semi_homogeneous_batches(rows, key, size, homogeneous_ratio, seed)
    else:
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        plan = [order[s:s + size] for s in range(0, len(order), size)]
    return [b for b in plan if len(b) > 1]


class RowBatchSampler(DefaultBatchSampler):
    """`batches` for the Trainer: epoch e is planned with seed `seed + e`. `rows` carry the texts and
    the task key the plan reads. Its length is epoch 0's number of batches (a semi-homogeneous epoch
    may differ by a batch; the Trainer stops at the planned number of steps)."""

    def __init__(self, dataset, batch_size: int, drop_last: bool = False, valid_label_columns=None, generator=None,
                 seed: int = 0, *, rows: list[dict], homogeneous_ratio: float | None = None, key: str = "task_type"):
        super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        self.rows, self.homogeneous_ratio, self.key = rows, homogeneous_ratio, key
        self._len = len(self.plan(0))

    def plan(self, epoch: int) -> list[list[int]]:
        return batches(self.rows, self.batch_size, self.seed + epoch, self.homogeneous_ratio, self.key)

    def __iter__(self):
        yield from self.plan(self.epoch)

    def __len__(self) -> int:
        return self._len
