"""The files of infra/, checked as far as this machine can: the compose file's wiring, the Kubernetes
GPU job template rendered by prefect-kubernetes' own worker code into a Job that round-trips through
the Kubernetes client's models, and infra/with-vllm.sh run for real with a stand-in `vllm` on PATH."""
import asyncio
import json
import os
import re
import socket
import subprocess
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"


def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def test_compose_services_are_wired_and_pinned():
    spec = compose()
    services = spec["services"]
    assert {"postgres", "prefect-server", "minio", "cpu-worker", "gpu-worker"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in spec["volumes"], (name, volume)
        if "build" in service:
            assert (INFRA / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        image = service.get("image", "")
        ours = image.startswith("embedfactory-")  # built here from the repository
        assert ours or (":" in image and not image.endswith(":latest")), (name, image)  # others pinned
    assert "postgresql+asyncpg://" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    gpu = services["gpu-worker"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"  # the anchor merged in
    assert "--pool gpu" in " ".join(_cmd(INFRA / "gpu-worker.Dockerfile"))


def _cmd(dockerfile: Path) -> list[str]:
    (line,) = [x for x in dockerfile.read_text().splitlines() if x.startswith("CMD ")]
    return json.loads(line[4:])


def test_every_variable_the_compose_file_reads_is_documented():
    text = (INFRA / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    documented = set(re.findall(r"^(\w+)=", (INFRA / ".env.example").read_text(), re.M))
    assert used and used <= documented, used - documented


def test_gpu_job_template_renders_to_a_valid_job():
    from kubernetes_asyncio.client import ApiClient
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = json.loads((INFRA / "k8s" / "gpu-base-job-template.json").read_text())
    config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(
        template, {"gpus": 2, "env": {"VLLM_MODEL": ""}}))
    config.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="night"))
    manifest = config.job_manifest
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["command"] == ["/app/infra/with-vllm.sh"]
    assert container["args"] == ["prefect", "flow-run", "execute"]  # the wrapper runs the flow run
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VLLM_MODEL"] == "" and env["PREFECT__FLOW_RUN_ID"]

    class Response:
        data = json.dumps(manifest)

    async def round_trip():
        async with ApiClient() as client:
            return client.sanitize_for_serialization(client.deserialize(Response(), "V1Job"))

    expected = json.loads(json.dumps(manifest))
    expected["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "2"  # a quantity
    assert asyncio.run(round_trip()) == expected  # no field the Job model lacks, none misplaced


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_with_vllm_serves_the_model_for_the_command_and_stops_it(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vllm"  # answers /health like `vllm serve`, records its arguments
    fake.write_text(f"""#!{os.sys.executable}
import http.server, sys
open({str(tmp_path / 'args')!r}, 'w').write(' '.join(sys.argv[1:]))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == '/health' else 404); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(('127.0.0.1', int(sys.argv[sys.argv.index('--port') + 1])), H).serve_forever()
""")
    fake.chmod(0o755)
    port = _free_port()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "VLLM_MODEL": "Qwen/Qwen2.5-7B-Instruct",
           "VLLM_PORT": str(port), "VLLM_ARGS": "--max-model-len 8192"}
    done = subprocess.run([str(INFRA / "with-vllm.sh"), "sh", "-c", f"curl -sf http://127.0.0.1:{port}/health "
                           "&& echo command-ran"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "command-ran" in done.stdout, done.stderr
    assert (tmp_path / "args").read_text() == \
        f"serve Qwen/Qwen2.5-7B-Instruct --host 127.0.0.1 --port {port} --max-model-len 8192"
    probe = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/health"], capture_output=True)
    assert probe.returncode != 0  # the server went away with the command

    (tmp_path / "args").unlink()
    without = subprocess.run([str(INFRA / "with-vllm.sh"), "echo", "training"], capture_output=True, text=True,
                             env={**env, "VLLM_MODEL": ""}, timeout=30)
    assert without.stdout.strip() == "training" and not (tmp_path / "args").exists()  # no server started
