"""The real `synth` flow: real Prefect API, real llama.cpp server with the shipped 0.5B model, real
MiniLM. Tiny sizes; the second run must reuse every shard and make no LLM call."""
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tiny import tiny

from embedfactory.config import Endpoint, SynthParams
from embedfactory.synth import pipeline
from embedfactory.synth.preflight import PreflightError
from flows.synth import synth

STAGES = ["personas", "tasks", "examples", "revised", "verdicts"]
DATASET_COLUMNS = ["anchor", "positive", "negative", "instruction", "task_type",
                   "persona_id", "task_id", "example_id", "source_id", "mined_negatives"]


@pytest.mark.slow
def test_synth_runs_every_stage_then_resumes_without_llm_calls(tmp_path, prefect_api, llm_server, capsys):
    endpoint, url = llm_server
    params = tiny(tmp_path, endpoint.model_copy(update={"base_url": url}))
    first = synth(params)

    run_dir = tmp_path / "runs" / first["run_id"]
    for stage in STAGES:
        manifest = json.loads((run_dir / stage / "_manifest.json").read_text())
        assert manifest["shards"] and list((run_dir / stage).glob("part-*.parquet"))
    summary = {row["stage"]: row for row in first["summary"]}
    assert summary["personas"]["rows_out"] == 2
    assert summary["tasks"]["rows_in"] == 2 and summary["tasks"]["llm_calls"] >= 2
    assert summary["examples"]["rows_in"] == summary["tasks"]["rows_out"]
    assert all(summary[s]["reused"] == 0 for s in STAGES)

    verdicts = pq.read_table(run_dir / "verdicts" / "part-00000.parquet").to_pylist()
    assert all(v["rank"] >= 1 for v in verdicts)
    assert all((v["drop_reason"] is None) == v["kept"] for v in verdicts)

    dataset = pq.read_table(Path(first["dataset"]["path"]) / "data" / "train-00000-of-00001.parquet")
    assert dataset.column_names == DATASET_COLUMNS
    assert dataset.num_rows == sum(v["kept"] for v in verdicts) > 0
    rows = dataset.to_pylist()
    from datasets import load_dataset  # the published folder is a Hub dataset: its README card says how to load it
    assert load_dataset(first["dataset"]["path"], split="train").to_list() == rows
    assert (Path(first["dataset"]["path"]) / "README.md").read_text().startswith("---\n")

    from embedfactory.__main__ import main  # inspecting the run as a user would: counts, reasons, lineage
    main(["show", str(tmp_path)])
    shown = capsys.readouterr().out
    assert f"run {first['run_id']}" in shown and f"lineage of {rows[0]['example_id']}" in shown
    for stage in STAGES:
        assert f"\n{stage} " in shown and f"[{stage}]" in shown  # a count line and a lineage step each
    main(["show", str(tmp_path), "--stage", "tasks", "-n", "1"])
    assert "rows of tasks" in capsys.readouterr().out
    assert all(r["persona_id"] and r["task_id"] and r["example_id"] and r["instruction"] for r in rows)
    assert all((r["negative"] is None) or r["negative"] != r["positive"] for r in rows)
    assert {r["task_type"] for r in rows} <= {"retrieval", "classification", "sts", "short-short"}

    training = first["training"]
    assert len(training["losses"]) == training["steps"] >= 1
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from embedfactory.models import embedding_model_path
    tuned = SentenceTransformer(training["model_path"])
    base = SentenceTransformer(embedding_model_path(params.train.base_model))
    query = tuned.prompts.get("query", "")  # anchors as trained, for both models

    def closeness(model) -> tuple[float, float]:
        """On the rows it was trained on: mean cosine of anchor and positive, and that minus the mean
        cosine of an anchor and the other rows' positives."""
        a = model.encode([query + r["anchor"] for r in rows], normalize_embeddings=True)
        p = model.encode([r["positive"] for r in rows], normalize_embeddings=True)
        sims, n = a @ p.T, len(rows)
        others = (sims.sum() - np.trace(sims)) / (n * n - n) if n > 1 else 0.0
        return float(np.trace(sims) / n), float(np.trace(sims) / n - others)

    (tuned_pos, tuned_margin), (base_pos, base_margin) = closeness(tuned), closeness(base)
    print(f"trained rows: anchor-positive cosine {base_pos:.4f} -> {tuned_pos:.4f}, margin {base_margin:.4f} -> {tuned_margin:.4f}")
    assert tuned_pos > base_pos and tuned_margin > base_margin  # the steps pulled its pairs together, apart from the rest
    png = b"\x89PNG\r\n\x1a\n"  # the pictures: loss curve, base vs tuned, attribute shares
    assert Path(training["plot"]).read_bytes().startswith(png)
    assert Path(training["evaluation"]["plot"]).read_bytes().startswith(png)
    assert (Path(first["dataset"]["path"]) / "attributes.png").read_bytes().startswith(png)
    card = (Path(training["model_path"]) / "README.md").read_text()
    assert card.startswith("---\n") and "base_model: sentence-transformers/all-MiniLM-L6-v2" in card
    assert "## Training (embedfactory)" in card and first["dataset"]["sha256"] in card
    published = json.loads((Path(first["dataset"]["path"]) / "card.json").read_text())
    assert "license: apache-2.0" in card and f"{published['name']}/{published['version']}" in card
    assert "model-index:" in card.split("---\n")[1]  # the evaluation's scores, for the Hub
    (main,) = [r for r in training["evaluation"]["rows"] if r["main"]]  # base vs fine-tuned, held out
    assert main["set"] == "stsb-200" and main["metric"] == "spearman" and 0.7 < main["base"] < 0.95
    # a few rows and steps: the figure is the tuned model's, measured (quality: bench/quality.py)
    assert abs(main["fine_tuned"] - main["base"]) < 0.1 and training["evaluation"]["model"] == training["model_path"]
    assert json.loads(Path(training["evaluation"]["path"]).read_text())["fine_tuned"][0]["metrics"]["pairs"] == 200

    from flows.train import train  # the standalone flow finds the latest dataset, reuses the model
    again = train(store=str(tmp_path), config=params.train)
    assert again["model_path"] == training["model_path"] and again["run_token"] == training["run_token"]

    second = synth(params)
    assert second["run_id"] == first["run_id"]
    for row in second["summary"]:
        assert row["llm_calls"] == 0 and row["reused"] == row["shards"], row
    assert second["dataset"]["sha256"] == first["dataset"]["sha256"]


def test_unreachable_endpoint_fails_before_anything_is_generated(tmp_path, prefect_api):
    params = tiny(tmp_path, Endpoint(base_url="http://127.0.0.1:9/v1", timeout_s=2))
    with pytest.raises(PreflightError, match=r"- generator: model endpoint http://127.0.0.1:9/v1 is not reachable"):
        synth(params)
    assert not (tmp_path / "runs").exists()


def test_unwritable_store_fails_before_any_model_starts(tmp_path, prefect_api):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PreflightError, match=r"- store: store .* is not writable"):
        synth(tiny(tmp_path / "file" / "store", Endpoint()))


def test_train_flow_refuses_a_store_without_a_dataset(tmp_path, prefect_api):
    from flows.train import train

    with pytest.raises(FileNotFoundError, match="no published dataset 'synth'"):
        train(store=str(tmp_path))


def test_invalid_parameters_fail_before_the_flow_runs(tmp_path, prefect_api):
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError, match="personas"):
        synth(params={"store": str(tmp_path), "synth": {"personas": 0}})
    assert not (tmp_path / "runs").exists()


def test_cli_names_the_bad_parameter():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "flows.synth", "--task-mix", "retrieval=2,poetry=1"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode != 0 and "invalid parameters" in done.stderr and "poetry" in done.stderr


def test_cli_sets_a_separate_revisor_endpoint():
    from flows.synth import _params_from_cli

    params = _params_from_cli(["--revisor-url", "http://revisor:8000/v1", "--revisor-model", "rev-7b"])
    assert (params.revisor.base_url, params.revisor.model) == ("http://revisor:8000/v1", "rev-7b")
    assert params.generator.base_url == "embedded" and _params_from_cli([]).revisor is None


def test_every_flag_sets_its_config_field_and_says_its_description_and_default():
    from embedfactory.runconfig import field_help
    from flows.synth import FLAGS, _params_from_cli

    assert field_help(SynthParams, "synth.personas") == (
        f"{SynthParams.model_fields['synth'].annotation.model_fields['personas'].description} "
        f"(default: {SynthParams().synth.personas})")
    def field(params, key):
        for part in key.split("."):
            params = getattr(params, part)
        return params

    for flag, (key, kind) in FLAGS.items():  # each flag, given a value other than its default, sets its field
        default = field(SynthParams(), key)
        given = (default or 2) + 1 if kind is int else 0.5 if kind is float else key.replace("_", "-") + "-given"
        assert field(_params_from_cli([flag, str(given)]), key) == given != default, flag


def test_missing_persona_source_fails_before_any_model_starts(tmp_path, prefect_api):
    with pytest.raises(PreflightError, match=r"- synth.persona_source: .*nobody.parquet"):
        synth(tiny(tmp_path, Endpoint(base_url="http://127.0.0.1:9/v1"),
                   persona_source=str(tmp_path / "nobody.parquet")))
    assert not (tmp_path / "runs").exists()


def test_cli_routes_the_brainstorm_to_its_own_endpoint():
    from flows.synth import _params_from_cli

    params = _params_from_cli(["--brainstorm-url", "https://api.openai.com/v1", "--brainstorm-model", "gpt-4o",
                               "--base-url", "http://gpu-1:8000/v1", "--model", "senior-8b"])
    assert (params.brainstormer.base_url, params.brainstormer.model) == ("https://api.openai.com/v1", "gpt-4o")
    assert params.generator.model == "senior-8b" and _params_from_cli([]).brainstormer is None
    # the brainstorm endpoint is part of the run's identity: another teacher, another run
    assert pipeline.default_run_id(params) != pipeline.default_run_id(params.model_copy(update={"brainstormer": None}))


def test_an_expected_stop_ends_the_command_with_one_message_and_no_traceback(tmp_path):
    """Too few rows is an outcome, not a bug: `python -m flows.synth` prints what happened and where to
    look once, exits 1, and no traceback (Prefect's task and flow logs of it included) reaches the terminal."""
    import os
    import subprocess
    import sys

    from fake_llm import FakeChatServer

    with FakeChatServer() as server:  # made-up valid replies: a real run, gates on, but never 1000 rows
        done = subprocess.run(
            [sys.executable, "-m", "flows.synth", "--store", str(tmp_path), "--base-url", server.base_url,
             "--model", "fake", "--personas", "2", "--no-train", "--set", "params.min_published_rows=1000"],
            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=600,
            env={**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "HF_HUB_OFFLINE": "1"})
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    (message,) = [line for line in done.stderr.splitlines() if line.startswith("TooFewRows:")]  # once
    assert message.startswith("TooFewRows: run run-") and "fewer than min_published_rows 1000" in message
    assert f"python -m embedfactory show {tmp_path} --stage verdicts --rejected" in message
    assert sum(line.startswith("TooFewRows:") for line in output.splitlines()) == 1  # Prefect's state lines aside


def test_an_unexpected_error_keeps_its_traceback(capsys):
    from embedfactory.publish.dataset import TooFewRows
    from tasks.common import run_cli

    with pytest.raises(ZeroDivisionError):  # a bug is not an outcome: raised as it is
        run_cli(lambda: 1 / 0)
    with pytest.raises(SystemExit) as ended:
        run_cli(lambda: (_ for _ in ()).throw(TooFewRows("run r kept 0 of 3 rows")))
    assert ended.value.code == 1 and capsys.readouterr().err.strip() == "TooFewRows: run r kept 0 of 3 rows"


def test_the_closing_lines_say_where_the_dataset_is_what_it_holds_and_what_comes_next():
    from flows.synth import closing

    summary = [{"stage": "verdicts", "rows_in": 10, "rows_out": 7, "why": "gate length 3"}]
    result = {"run_id": "run-1", "summary": summary, "training": None,
              "dataset": {"path": "./data/datasets/synth/run-1", "rows": 7, "by_task_type": {"sts": 2, "retrieval": 5}}}
    text = closing(result, "./data", 125.0)
    assert "run run-1 finished in 2.1 min" in text and "gate length 3" in text
    assert "dataset: ./data/datasets/synth/run-1\n  7 rows: retrieval 5, sts 2" in text
    assert "python -m flows.train --store ./data" in text and "python -m embedfactory show ./data" in text
    assert "load_dataset('./data/datasets/synth/run-1')" in text
