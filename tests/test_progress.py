"""Progress a person can plan by: rows done of the total, rate and ETA per shard and per stage, and
training's loss and steps/s (a hand-driven clock stands in for time)."""
import logging

from embedfactory.config import SynthParams
from embedfactory.report import progress
from embedfactory.synth.pipeline import stage_shards
from tasks.common import progress as task_progress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_meter_gives_rate_and_time_left():
    clock = Clock()
    meter = progress.Meter("examples shard 00003", clock=clock)
    meter.update(0, 64)
    assert meter.line() == "examples shard 00003: 0/64 rows (0%), ? rows/s, ETA ?"
    clock.now += 20
    meter.update(16, 64)
    assert meter.rate == 0.8 and meter.eta == 60
    assert meter.line(", loss 0.2500") == "examples shard 00003: 16/64 rows (25%), 0.80 rows/s, ETA 1m00s, loss 0.2500"
    assert [progress.duration(s) for s in (None, 44.6, 185, 7620)] == ["?", "45s", "3m05s", "2h07m"]


def test_a_stage_adds_up_its_shards_and_estimates_the_ones_not_started():
    clock = Clock()
    stage = progress.StageMeter("examples", shards=4, clock=clock)
    stage.update("00000", 0, 10)
    clock.now += 10
    stage.update("00000", 5, 10)
    stage.update("00001", 5, 30)
    assert stage.totals() == (10, 80)  # 40 rows started, two shards more of 20 rows each
    assert stage.line() == "stage examples: 10/~80 rows (12%), 1.00 rows/s, ETA 1m10s; 2 of 4 shards started"
    for key in ("00002", "00003"):
        stage.update(key, 20, 20)
    assert stage.totals() == (50, 80) and "50/80 rows" in stage.line()
    assert progress.stage_meter("run-a", "tasks", 3) is progress.stage_meter("run-a", "tasks")


def test_the_task_callback_logs_at_tenths_and_every_30_seconds(caplog):
    clock = Clock()
    report = task_progress("tasks shard 00000", stage=("run-b", "tasks", "00000"), shards=2, clock=clock)
    with caplog.at_level(logging.INFO, logger="embedfactory"):
        for done in range(0, 101):
            clock.now += 1
            report(done, 100)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 11 and lines[5].startswith("tasks shard 00000: 50/100 rows (50%), 1.00 rows/s, ETA 50s")
    assert lines[5].endswith("| stage tasks: 50/~200 rows (25%), 1.00 rows/s, ETA 2m30s; 1 of 2 shards started")
    caplog.clear()
    slow = task_progress("train", unit="steps", clock=clock)
    with caplog.at_level(logging.INFO, logger="embedfactory"):
        slow(1, 1000, 0.5)
        for step in range(2, 40):
            clock.now += 5
            slow(step, 1000, 0.4)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 7  # the first, then one per 30 s within the first tenth
    assert lines[-1] == "train: 37/1000 steps (4%), 0.20 steps/s, ETA 1h20m, loss 0.4000"


def test_every_stage_knows_its_shard_count():
    params = SynthParams(synth={"personas": 10, "personas_per_shard": 4})
    assert [stage_shards(params, s) for s in ("personas", "tasks", "examples", "revised", "verdicts")] == [
        1, 3, 3, 3, 3]
