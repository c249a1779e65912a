"""`make run` at its defaults, as a newcomer runs it: flow `synth` with exactly the parameters
`python -m flows.synth --store STORE` builds (the Makefile adds nothing else), the real embedded
server with the default generator, every quality gate and the ranking filter at their defaults, then
training and evaluation. It must publish at least MAKE_RUN_FLOOR rows; a default that stops
meeting it fails here, not on a newcomer's machine."""
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from embedfactory.config import GATE_NAMES, FilterConfig, SynthParams
from flows.synth import _params_from_cli, closing, synth

MAKE_RUN_FLOOR = 64  # kept rows: issue 30's floor for the default run


def test_the_defaults_are_what_make_run_runs():
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "$(BIN)/python -m flows.synth --store $(STORE) $(ARGS)" in makefile and "\nARGS   ?=\n" in makefile
    params = _params_from_cli(["--store", "./data"])
    assert params == SynthParams()  # the flow's own defaults: the Prefect form shows the same run
    assert params.filter == FilterConfig() and list(params.filter.gates) == list(GATE_NAMES)


@pytest.mark.slow
def test_make_run_defaults_publish_at_least_the_floor_with_every_gate_on(tmp_path, prefect_api):
    params = _params_from_cli(["--store", str(tmp_path)])
    started = time.monotonic()
    result = synth(params)
    seconds = time.monotonic() - started
    print(closing(result, str(tmp_path), seconds))
    dataset = result["dataset"]
    rows = pq.read_table(Path(dataset["path"]) / "data" / "train-00000-of-00001.parquet")
    assert rows.num_rows == dataset["rows"] >= MAKE_RUN_FLOOR, result["summary"]
    verdicts = {row["stage"]: row for row in result["summary"]}["verdicts"]
    assert verdicts["rows_out"] == dataset["rows"] and verdicts["rows_in"] > dataset["rows"]  # the gates had work
    assert sum(dataset["by_task_type"].values()) == dataset["rows"] and len(dataset["by_task_type"]) >= 3
    assert result["training"]["evaluation"]["rows"], "make run trains and evaluates on what it published"
