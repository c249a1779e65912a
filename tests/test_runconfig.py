"""One configuration format for every flow: `--config run.yaml` (the deployment's parameter keys),
flags and `--set` overrides, every key checked before anything runs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from embedfactory import runconfig
from embedfactory.align.config import AlignParams
from embedfactory.config import SynthParams, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return str(path)


def test_synth_reads_the_deployments_own_parameters_and_flags_and_set_override_them(tmp_path, monkeypatch):
    from flows.synth import _params_from_cli

    deployment = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"][0]
    assert deployment["entrypoint"] == "flows/synth.py:synth"
    config = write(tmp_path, yaml.safe_dump(deployment["parameters"]))
    with pytest.raises(runconfig.ConfigError, match=r"params.store uses \$EMBEDFACTORY_STORE, which is not set"):
        _params_from_cli(["--config", config])
    monkeypatch.setenv("EMBEDFACTORY_STORE", str(tmp_path / "nightly"))  # as Prefect fills its templates
    params = _params_from_cli(["--config", config])
    assert params.store == str(tmp_path / "nightly")
    assert params.synth.personas == 64 and params.generator.model == "Qwen/Qwen2.5-7B-Instruct"
    assert params.generator.concurrency == 64 and params.fan_out == "synth-shard/gpu"
    assert params.synth.max_attempts == SynthParams().synth.max_attempts  # keys not given keep their defaults

    params = _params_from_cli(["--config", config, "--personas", "8", "--set", "params.synth.personas=9",
                               "--set", "params.train.epochs=2", "--revisor-url", "http://r:8000/v1"])
    assert params.synth.personas == 9 and params.synth.tasks_per_persona == 2  # --set last, file kept
    assert params.train.epochs == 2 and params.train.batch_size == TrainConfig().batch_size
    assert params.revisor.base_url == "http://r:8000/v1" and params.revisor.model == "Qwen/Qwen2.5-7B-Instruct"
    assert _params_from_cli(["--config", config, "--no-train"]).train is None
    assert _params_from_cli([]) == SynthParams()
    assert _params_from_cli(["--set", "params.run_id=2026-11-22"]).run_id == "2026-11-22"  # text, not a date
    assert _params_from_cli(["--task-mix", "retrieval=1"]).synth.task_mix == {"retrieval": 1.0}  # only that type
    assert "concurrency" not in _params_from_cli(["--slots", "32"]).generator.model_fields_set


def test_unknown_keys_fail_with_the_valid_ones_listed(tmp_path):
    from flows.synth import _params_from_cli

    config = write(tmp_path, "params:\n  synth:\n    persona: 8\n")
    with pytest.raises(runconfig.ConfigError, match="unknown key 'params.synth.persona'; valid keys of "
                                                    "params.synth: personas, "):
        _params_from_cli(["--config", config])
    with pytest.raises(runconfig.ConfigError, match="unknown key 'parms'; valid keys: params"):
        _params_from_cli(["--config", write(tmp_path, "parms: {}\n")])
    with pytest.raises(runconfig.ConfigError, match="greater than 0"):  # values validated too
        _params_from_cli(["--set", "params.synth.personas=0"])
    with pytest.raises(runconfig.ConfigError, match="must hold a mapping"):
        _params_from_cli(["--config", write(tmp_path, "- a\n- b\n")])
    with pytest.raises(runconfig.ConfigError, match="KEY=VALUE"):
        _params_from_cli(["--set", "personas"])


def test_broken_yaml_names_file_line_and_column_on_one_line(tmp_path):
    config = write(tmp_path, "params:\n  synth: {personas: 3\n")
    with pytest.raises(runconfig.ConfigError) as raised:
        runconfig.read(config)
    message = str(raised.value)
    assert "\n" not in message  # a terminal's last line shows all of it
    assert message.startswith(f"config {config}:3:1: not valid YAML: expected ',' or '}}', but got '<stream end>' "
                              "(while parsing a flow mapping)"), message


def test_train_eval_and_align_take_the_same_format(tmp_path):
    from flows.align import _params_from_cli as align_cli
    from flows.eval import _arguments_from_cli as eval_cli
    from flows.train import _arguments_from_cli as train_cli

    got = train_cli(["--config", write(tmp_path, "store: /s\nconfig:\n  temperature: 0.02\n  epochs: 3\n"),
                     "--epochs", "4", "--set", "version=v2"])
    assert got["store"] == "/s" and got["version"] == "v2"
    assert got["config"] == TrainConfig(temperature=0.02, epochs=4)
    with pytest.raises(runconfig.ConfigError, match="unknown key 'config.epoch'; valid keys of config: "):
        train_cli(["--set", "config.epoch=3"])

    got = eval_cli(["--config", write(tmp_path, "model: /m\neval_sets: [stsb-test]\n"), "--baseline", "b"])
    assert got == {"model": "/m", "eval_sets": ["stsb-test"], "baseline": "b"}
    with pytest.raises(runconfig.ConfigError, match="a model to score is required"):
        eval_cli([])

    params = align_cli(["--steps", "3", "--set", "params.candidates=2"])
    assert params.candidates == 2 and params.junior.steps == params.senior.steps == 3
    assert params.senior.learning_rate == AlignParams().senior.learning_rate  # the senior's own default kept


@pytest.mark.parametrize("flow", ["synth", "train", "eval", "align"])
def test_every_flow_has_a_help_and_refuses_bad_keys_before_starting(flow, tmp_path):
    shown = subprocess.run([sys.executable, "-m", f"flows.{flow}", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and "--config" in shown.stdout and "--set KEY=VALUE" in shown.stdout
    bad = subprocess.run([sys.executable, "-m", f"flows.{flow}", "--set", "nope=1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "unknown key 'nope'" in bad.stderr


def test_flows_wait_for_prefects_temporary_server_unless_told_otherwise():
    """Prefect's 20 s wait for its temporary server is too short on 2 cores; a user's own value is kept."""
    probe = ("import flows; from prefect.settings import get_current_settings; "
             "print(get_current_settings().server.ephemeral.startup_timeout_seconds)")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    assert subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.split() == ["180"]
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "45"
    assert subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.split() == ["45"]


def test_flow_parameter_help_reads_the_default_from_the_flows_signature():
    from flows.eval import evaluate
    from flows.train import train

    def fn(store: str = "./somewhere", sets: list[str] = ("a", "b"), version: str | None = None):
        return store, sets, version

    assert runconfig.parameter_help(fn, "store", "where") == "where (default: ./somewhere)"
    assert runconfig.parameter_help(fn, "sets", "which") == "which (default: a,b)"
    assert runconfig.parameter_help(fn, "version", "v") == "v (default: none)"
    import inspect

    default = inspect.signature(train.fn).parameters["dataset"].default
    assert runconfig.parameter_help(train, "dataset", "d") == f"d (default: {default})"  # a Prefect flow: its fn
    assert ",".join(inspect.signature(evaluate.fn).parameters["eval_sets"].default) in \
        runconfig.parameter_help(evaluate, "eval_sets", "s")
