"""Transformers folders to GGUF with llama.cpp's own converter (`convert_hf_to_gguf.py`), taken from
the same pinned llama.cpp source the embedded server is built from, so a model flow `align` made can be
served by the embedded server (``EMBEDFACTORY_GGUF``), any `llama-server` or Ollama, not only vLLM.

The converter, its `conversion/` package and the `gguf-py` it was written against are unpacked once
into ``<cache>/llama-server/convert-<version>/``; it runs in this interpreter (torch, transformers,
sentencepiece: extra `train`) with that `gguf-py` first on the path.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .build import LLAMA_CPP_PYTHON, cache_root, source_tree

OUTTYPES = ("f32", "f16", "bf16", "q8_0")  # what the converter writes without llama.cpp's quantize tool
PARTS = ("convert_hf_to_gguf.py", "conversion", "gguf-py")


def converter(log=print) -> Path:
    """The converter script, unpacked once (atomically) from the pinned llama.cpp source."""
    target = cache_root() / f"convert-{LLAMA_CPP_PYTHON}"
    script = target / PARTS[0]
    if script.exists():
        return script
    cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root()) as work:
        src, staged = source_tree(Path(work), log), Path(work) / "convert"
        staged.mkdir()
        for part in PARTS:
            (shutil.copytree if (src / part).is_dir() else shutil.copy)(src / part, staged / part)
        try:
            staged.rename(target)
        except OSError:  # another process unpacked it first
            if not script.exists():
                raise
    return script


def convert(folder: str | Path, outfile: str | Path, outtype: str = "f16", log=print) -> Path:
    """Write the transformers model in `folder` as one GGUF file; raises with the converter's last
    lines when it refuses the model (an architecture llama.cpp does not know, a missing tokenizer)."""
    if outtype not in OUTTYPES:
        raise ValueError(f"GGUF type {outtype!r}: one of {', '.join(OUTTYPES)}")
    script, outfile = converter(log), Path(outfile)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(script.parent / "gguf-py"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    partial = outfile.with_name(outfile.name + ".partial")
    done = subprocess.run([sys.executable, str(script), str(folder), "--outfile", str(partial),
                           "--outtype", outtype], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"llama.cpp's converter could not convert {folder} to GGUF:\n{tail}")
    partial.replace(outfile)
    return outfile
