"""Progress a person can plan by: work done of a total, the rate and the time left, for one shard and
for its whole stage (all the stage's shards this process runs), and for training (loss, steps/s).

A `Meter` measures; the caller decides where its lines go (a log every `LOG_EVERY_S` seconds and at
each tenth, a Prefect progress artifact, a terminal bar)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

LOG_EVERY_S = 30.0  # a non-interactive log line at least this often while work goes on


def duration(seconds: float | None) -> str:
    """'45s', '3m05s', '2h07m'; '?' when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass
class Meter:
    """Done of total since the first update; the rate is over the whole span (steady for batched LLM
    work, where replies come back in bursts)."""
    label: str
    unit: str = "rows"
    clock: callable = time.monotonic
    started: float | None = None
    done: int = 0
    total: int = 0
    _first_done: int = 0

    def update(self, done: int, total: int) -> None:
        now = self.clock()
        if self.started is None:
            self.started, self._first_done = now, done
        self.done, self.total = done, total

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started

    @property
    def rate(self) -> float | None:
        """Units per second, once any came after the first update."""
        elapsed, gained = self.elapsed, self.done - self._first_done
        return gained / elapsed if elapsed > 0 and gained > 0 else None

    @property
    def eta(self) -> float | None:
        rate = self.rate
        return max(self.total - self.done, 0) / rate if rate else None

    def line(self, extra: str = "", approx: bool = False) -> str:
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        rate = f"{self.rate:.2f} {self.unit}/s" if self.rate else f"? {self.unit}/s"
        return (f"{self.label}: {self.done}/{'~' if approx else ''}{self.total} {self.unit}{share}, {rate}, "
                f"ETA {duration(self.eta)}{extra}")


@dataclass
class StageMeter:
    """One stage's shards in this process: rows done of the rows of the shards started, and while
    some of its `shards` have not started, their rows estimated from the started ones' mean."""
    stage: str
    shards: int | None = None
    clock: callable = time.monotonic
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)
    meter: Meter | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, key: str, done: int, total: int) -> None:
        with self.lock:
            self.parts[key] = (done, total)
            if self.meter is None:
                self.meter = Meter(f"stage {self.stage}", clock=self.clock)
            self.meter.update(*self.totals())

    def totals(self) -> tuple[int, int]:
        done = sum(d for d, _ in self.parts.values())
        total = sum(t for _, t in self.parts.values())
        if self.shards and len(self.parts) < self.shards and self.parts:
            total += round(total / len(self.parts) * (self.shards - len(self.parts)))
        return done, total

    def line(self) -> str:
        with self.lock:
            if self.meter is None:
                return f"stage {self.stage}: not started"
            started = f"; {len(self.parts)} of {self.shards} shards started" if self.shards else ""
            return self.meter.line(started, approx=bool(self.shards) and len(self.parts) < self.shards)


_STAGES: dict[tuple[str, str], StageMeter] = {}
_STAGES_LOCK = threading.Lock()


def stage_meter(run_id: str, stage: str, shards: int | None = None, clock=time.monotonic) -> StageMeter:
    """The process-wide meter of one run's stage (shards running in threads of this process share it)."""
    with _STAGES_LOCK:
        meter = _STAGES.get((run_id, stage))
        if meter is None:
            meter = _STAGES[(run_id, stage)] = StageMeter(stage, shards, clock)
        elif shards and not meter.shards:
            meter.shards = shards
        return meter


class Throttle:
    """True at each new tenth of the total, at the end, and at least every `every_s` seconds between."""

    def __init__(self, every_s: float = LOG_EVERY_S, clock=time.monotonic):
        self.every_s, self.clock = every_s, clock
        self.last_tenth, self.last_at = -1, None

    def due(self, done: int, total: int) -> bool:
        now, tenth = self.clock(), (10 * done) // max(total, 1)
        if tenth != self.last_tenth or self.last_at is None or now - self.last_at >= self.every_s:
            self.last_tenth, self.last_at = tenth, now
            return True
        return False
