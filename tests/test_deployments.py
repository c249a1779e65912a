from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parents[1]


def test_every_deployment_entrypoint_loads_the_named_flow():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    names = {}
    for deployment in spec["deployments"]:
        path, func = deployment["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(f"{ROOT / path}:{func}")
        names[f"{flow.name}/{deployment['name']}"] = deployment
    assert {"synth/main", "train/main", "eval/main"} <= set(names)
    assert names["synth/main"]["schedules"][0]["cron"]


def test_synth_parameters_are_described_for_the_ui():
    from flows.synth import synth

    schema = synth.parameters.model_dump()
    params = schema["definitions"]["SynthParams"]["properties"]
    assert params["store"]["description"] and params["run_id"]["description"]
    assert schema["definitions"]["SynthConfig"]["properties"]["personas"]["exclusiveMinimum"] == 0


def test_grounded_deployment_parameters_are_valid_synth_parameters():
    from embedfactory.config import SynthParams

    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    (grounded,) = [d for d in spec["deployments"] if d["name"] == "grounded"]
    params = SynthParams.model_validate({**grounded["parameters"]["params"], "store": "/tmp/store"})
    assert params.grounded.corpus == "{{ $EMBEDFACTORY_CORPUS }}" and 0 < params.grounded.share < 1
