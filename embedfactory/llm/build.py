"""A portable build of llama.cpp's `llama-server`, the embedded generator's engine.

The source is the llama.cpp tree vendored in the llama-cpp-python sdist (MIT, pinned below), fetched
with `pip download`, so the build needs nothing beyond the package registry. Nothing is tuned to the
build machine: the engine is compiled once with a baseline CPU backend and once more per CPU
variant below; ggml scores the variants against the CPU at start and loads the best one. A variant
that the machine reports but cannot execute (a VM that advertises AVX-512 or AMX) dies with SIGILL
during the server's warm-up; the launcher (`server.py`) then excludes it and starts again.

The result is cached under ``<cache>/llama-server/<key>/`` where the key hashes the source version,
the flags and the compiler, so changing a flag builds anew and nothing stale is ever reused:

    bin/llama-server, bin/lib*.so     the server and its libraries (rpath $ORIGIN: relocatable)
    cpu/libggml-cpu.so                the baseline CPU backend (x86-64 with SSE4.2; any other arch: generic)
    cpu/libggml-cpu-<variant>.so      the optimised variants
    build.json                        what was built, from what, with which flags

``EMBEDFACTORY_LLAMA_SERVER`` points the launcher at another `llama-server` instead (a distro package,
a CUDA build); ``EMBEDFACTORY_LLAMA_CPP_SRC`` builds from a local llama.cpp tree or sdist (offline).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from ..ids import stable_hash

LLAMA_CPP_PYTHON = "0.3.36"  # whose sdist vendors the llama.cpp source we build

COMMON_FLAGS = {
    "CMAKE_BUILD_TYPE": "Release",
    "BUILD_SHARED_LIBS": "ON",
    "GGML_NATIVE": "OFF",  # never -march=native: the binary must run on other machines
    "GGML_BACKEND_DL": "ON",  # CPU backends are loaded at run time, best scoring first
    "GGML_OPENMP": "OFF",
    "LLAMA_CURL": "OFF",
    "LLAMA_OPENSSL": "OFF",
    "LLAMA_BUILD_TESTS": "OFF",
    "LLAMA_BUILD_EXAMPLES": "OFF",
    "LLAMA_BUILD_TOOLS": "ON",
    "LLAMA_BUILD_SERVER": "ON",
    "LLAMA_BUILD_UI": "OFF",
    "CMAKE_INSTALL_RPATH": "$ORIGIN",
    "CMAKE_BUILD_WITH_INSTALL_RPATH": "ON",
}
_X86_FEATURES = ["SSE42", "AVX", "AVX2", "BMI2", "FMA", "F16C", "AVX_VNNI", "AVX512", "AVX512_VBMI",
                 "AVX512_VNNI", "AVX512_BF16", "AMX_TILE", "AMX_INT8", "AMX_BF16"]
# x86-64 CPU backends: the baseline plus two that cover most machines in use (ggml's own names).
X86_VARIANTS: dict[str, list[str]] = {
    "": ["SSE42"],  # baseline: libggml-cpu.so, what runs when no variant scores
    "haswell": ["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2"],
    "icelake": ["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI"],
}


def variants() -> dict[str, list[str]]:
    return X86_VARIANTS if platform.machine().lower() in ("x86_64", "amd64") else {"": []}


def variant_flags(features: list[str]) -> dict[str, str]:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    return {f"GGML_{f}": "ON" if f in features else "OFF" for f in _X86_FEATURES}


def cache_root() -> Path:
    root = Path(os.environ.get("EMBEDFACTORY_CACHE", Path.home() / ".cache" / "embedfactory"))
    return root / "llama-server"


def _compiler() -> str:
    cc = os.environ.get("CC", "cc")
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def build_key() -> str:
    source = os.environ.get("EMBEDFACTORY_LLAMA_CPP_SRC") or f"llama-cpp-python=={LLAMA_CPP_PYTHON}"
    return stable_hash(source, COMMON_FLAGS, {k: variant_flags(v) for k, v in variants().items()},
                       platform.machine(), _compiler(), length=12)


def install_dir() -> Path:
    return cache_root() / f"{LLAMA_CPP_PYTHON}-{build_key()}"


def server_binary() -> Path:
    """The `llama-server` to run: ``$EMBEDFACTORY_LLAMA_SERVER``, else this project's cached build."""
    if override := os.environ.get("EMBEDFACTORY_LLAMA_SERVER"):
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"EMBEDFACTORY_LLAMA_SERVER={override} is not a file")
        return path
    path = install_dir() / "bin" / "llama-server"
    if not path.is_file():
        raise FileNotFoundError(
            f"the embedded llama.cpp server is not built ({path} is missing): run "
            "`python -m embedfactory build-server` (`make setup` does), or point the generator at "
            "a vLLM/OpenAI URL with --base-url")
    return path


def cpu_backends(binary: Path) -> list[Path]:
    """The CPU backend libraries that go with `binary`, best first: the variants in reverse order of
    `variants()` (what ggml prefers when the CPU reports them all), the baseline last. Empty for a
    foreign, self-contained build."""
    folder = binary.parent.parent / "cpu"
    if not folder.is_dir():
        return []
    rank = {f"libggml-cpu-{name}.so" if name else "libggml-cpu.so": i for i, name in enumerate(variants())}
    return sorted(folder.glob("libggml-cpu*.so"), key=lambda lib: (-rank.get(lib.name, -1), lib.name))


def _tool(name: str) -> str:
    """cmake/ninja from this environment's bin (the `embedded` extra), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: pip install -e '.[embedded]' installs it")
    return found


def source_tree(work: Path, log) -> Path:
    """The llama.cpp source tree: a local one, or the pinned llama-cpp-python sdist's vendored copy."""
    given = os.environ.get("EMBEDFACTORY_LLAMA_CPP_SRC")
    archive: Path | None = None
    if given and Path(given).is_dir():
        return Path(given)
    if given:
        archive = Path(given)
    else:
        downloads = cache_root() / "src"
        downloads.mkdir(parents=True, exist_ok=True)
        archive = downloads / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
        if not archive.exists():
            log(f"downloading the llama-cpp-python {LLAMA_CPP_PYTHON} sdist (llama.cpp source)")
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--no-binary", ":all:", "-d", str(downloads),
                            f"llama-cpp-python=={LLAMA_CPP_PYTHON}"], check=True)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
        tar.extractall(work, members=members, filter="data")
    return next(work.glob("*/vendor/llama.cpp"))


def _configure_and_build(src: Path, build: Path, flags: dict[str, str], targets: list[str], log) -> None:
    args = [f"-D{k}={v}" for k, v in flags.items()]
    subprocess.run([_tool("cmake"), "-S", str(src), "-B", str(build), "-G", "Ninja",
                    f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}", *args],
                   check=True, stdout=subprocess.DEVNULL)
    jobs = str(os.cpu_count() or 2)
    log(f"building {' '.join(targets)} in {build.name} ({jobs} jobs)")
    subprocess.run([_tool("ninja"), "-C", str(build), "-j", jobs, *targets], check=True,
                   stdout=subprocess.DEVNULL)


def build(force: bool = False, log=print) -> Path:
    """Build (once) and return the install folder; a finished build is reused as it is."""
    target = install_dir()
    if (target / "build.json").exists() and not force:
        return target
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llama-build-") as tmp:
        work = Path(tmp)
        src = source_tree(work, log)
        staged = work / "install"
        (staged / "bin").mkdir(parents=True)
        (staged / "cpu").mkdir()
        # the server once, with the baseline backend; then only the CPU backend per variant
        for i, (name, features) in enumerate(variants().items()):
            build_dir = work / f"build-{name or 'base'}"
            targets = (["llama-server"] if i == 0 else []) + ["ggml-cpu"]
            _configure_and_build(src, build_dir, {**COMMON_FLAGS, **variant_flags(features)}, targets, log)
            out = build_dir / "bin"
            lib = out / "libggml-cpu.so"
            shutil.copy2(lib, staged / "cpu" / (f"libggml-cpu-{name}.so" if name else lib.name))
            if i == 0:
                for item in out.iterdir():
                    if item.name == "llama-server" or (item.suffix == ".so" or ".so." in item.name) \
                            and not item.name.startswith("libggml-cpu"):
                        shutil.copy2(item, staged / "bin" / item.name, follow_symlinks=True)
        (staged / "build.json").write_text(json.dumps({
            "source": os.environ.get("EMBEDFACTORY_LLAMA_CPP_SRC") or f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
            "flags": COMMON_FLAGS, "variants": {k or "baseline": v for k, v in variants().items()},
            "machine": platform.machine(), "compiler": _compiler(),
            "seconds": round(time.monotonic() - started, 1)}, indent=2))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(staged, target, symlinks=False)
    log(f"llama-server built in {time.monotonic() - started:.0f} s: {target}")
    return target
