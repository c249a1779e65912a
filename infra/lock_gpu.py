"""Pin the GPU worker image's packages: resolve infra/gpu-requirements.txt with pip (a dry run, no
install) for the image's Python and platform, then write every resolved version to
infra/gpu-constraints.txt and each package's declared requirements to infra/gpu-lock.json, from
which tests/test_gpu_image.py checks offline that the pinned set satisfies itself.

    python infra/lock_gpu.py [--report REPORT.json]   (--report: use a pip report made elsewhere)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def resolve() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), "-r", str(HERE / "gpu-requirements.txt")], check=True)
        return json.loads(report.read_text())


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--report", help="a pip --report JSON of gpu-requirements.txt")
    args = cli.parse_args()
    report = json.loads(Path(args.report).read_text()) if args.report else resolve()
    packages = {i["metadata"]["name"]: {"version": i["metadata"]["version"],
                                        "requires": i["metadata"].get("requires_dist", [])}
                for i in report["install"]}
    packages = dict(sorted(packages.items(), key=lambda kv: kv[0].lower()))
    env = report["environment"]
    (HERE / "gpu-constraints.txt").write_text(
        f"# Resolved by infra/lock_gpu.py for Python {env['python_version']} on {env['sys_platform']} "
        f"{env['platform_machine']}; do not edit by hand.\n"
        + "".join(f"{name}=={p['version']}\n" for name, p in packages.items()))
    (HERE / "gpu-lock.json").write_text(json.dumps({"environment": env, "packages": packages}, indent=1) + "\n")
    print(f"{len(packages)} packages pinned")


if __name__ == "__main__":
    main()
