"""The factory's reason to exist, measured: does training on its data make a model better on real queries?

From a BEIR-format folder (`corpus.jsonl`, `queries.jsonl`, `qrels/test.tsv`; default: Cranfield from
../shared/data), the factory writes queries for `--docs` sampled documents only (never the folder's
queries) with flow `synth` (grounded, embedded generator by default), gates them, filters them by
round trip against the whole corpus and mines negatives there; then all-MiniLM-L6-v2 is fine-tuned and
scored on the folder's real queries and on STS-B, base vs tuned.

The real queries are split once, by a hash of their ids, into a dev half and a test half. Choices
(the number of epochs, from the snapshots of one run on the unfiltered rows; then the round-trip k;
then which recipe is best) are made on dev; test figures are reported for every variant.
Ablations reuse the same generated shards (the store's shard cache): no gates, no round-trip filter,
no mined negatives, KaLM's temperature 0.01, one mined negative per row instead of KaLM's 7 (the default), and the losses (in-batch
InfoNCE, GIST with a guide, MarginMSE with a teacher). Trained models and scores are cached in the store too, so a rerun costs minutes.

    python bench/quality.py [--beir DIR] [--docs 600] [--store ./bench-quality]

Prints per set `quality <set> ndcg@10 base X tuned Y delta Z` (STS-B: spearman), the accepted share,
each gate's rejects, and the ablation table.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# the flow's temporary Prefect API starts beside a busy generator; Prefect's default wait is short
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline machines: no telemetry errors in the log
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from embedfactory import evalsets  # noqa: E402
from embedfactory.config import EMBEDDED_EMBEDDER, EMBEDDED_TEACHER, SynthParams, TrainConfig  # noqa: E402
from embedfactory.evalsets import RetrievalData  # noqa: E402
from embedfactory.ids import stable_hash  # noqa: E402
from embedfactory.store import StageDir, Store  # noqa: E402

CRANFIELD = evalsets.SHIPPED["cranfield"]
STSB = evalsets.SHIPPED["stsb-test"]


def split_queries(data: RetrievalData) -> tuple[RetrievalData, RetrievalData]:
    """A fixed dev/test split of the real queries: by a hash of each query id, half and half."""
    order = sorted(data.queries, key=lambda q: stable_hash("quality-split", q))
    halves = order[:len(order) // 2], order[len(order) // 2:]
    return tuple(RetrievalData(data.corpus, {q: data.queries[q] for q in half}, {q: data.qrels[q] for q in half})
                 for half in halves)


def generate(args, corpus_source: str, filter_model: str) -> list[dict]:
    """Run flow `synth` (grounded only, no training) and return every verdict row of the run."""
    from flows.synth import synth

    params = SynthParams(
        store=args.store, run_id=f"quality-{args.name}-{args.docs}-{args.seed}", dataset_name=f"quality-{args.name}",
        synth={"seed": args.seed}, grounded={"corpus": corpus_source, "documents": args.docs,
                                             "queries_per_passage": args.queries_per_doc},
        filter={"model": filter_model, "topk": max(args.ks), "dedupe_against": []},
        generator={"base_url": args.base_url, "model": args.model}, train=None)
    result = synth(params)
    rows = StageDir(Store(args.store), result["run_id"], "verdicts").read(ok_only=False).to_pylist()
    return [r for r in rows if r.get("status", "ok") == "ok"]


def reranked(store: Store, rows: list[dict], corpus_source: str, passage_words: int, model: str) -> list[dict]:
    """The rows with `rank` measured by another filter model against the same pool the flow searched
    (every passage of the corpus); embeddings kept in the store, so a rerun costs no model pass."""
    import numpy as np
    import torch

    from embedfactory import documents
    from embedfactory.filtering import encoder
    from embedfactory.models import load_embedder
    from embedfactory.search import search

    texts = [p.text for p in documents.passages(documents.load_documents(corpus_source), passage_words)]
    texts = list(dict.fromkeys(texts))
    queries = [r["anchor"] for r in rows]
    path = Path(store.root) / "bench-embeddings" / f"{stable_hash(model, texts, queries, length=16)}.npz"
    if not path.exists():
        embed = encoder(load_embedder(model, "cpu"))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, docs=embed(texts), queries=embed(queries))
    saved = np.load(path)
    index = {t: i for i, t in enumerate(texts)}
    found = search(torch.from_numpy(saved["queries"]), torch.from_numpy(saved["docs"]),
                   torch.tensor([index[r["positive"]] for r in rows]), 1)
    return [{**r, "rank": rank} for r, rank in zip(rows, found.rank.tolist())]


def select(rows: list[dict], k: int | None, gates: bool = True, mined: bool = True) -> list[dict]:
    """Training rows: not duplicates, passing the gates (unless `gates` is off), positive within the
    round-trip top k (None: no round-trip filter), with or without the mined negatives."""
    out = []
    for r in rows:
        reason = r["drop_reason"] or ""
        if reason.startswith("gate ") and gates:
            continue
        if reason.startswith(("exact", "near")):
            continue
        if k is not None and r["rank"] > k:
            continue
        out.append({"anchor": r["anchor"], "positive": r["positive"], "negative": r["negative"],
                    "instruction": r["task"], "task_type": r["task_type"],
                    "mined_negatives": list(r["mined_negatives"] or []) if mined else []})
    return out


def train(store: Store, rows: list[dict], cfg: TrainConfig, snapshots: bool = False) -> dict[int, str]:
    """Model folders for (rows, cfg), trained once per store: {epochs: folder}, the last epoch only, or
    with `snapshots` every epoch's model from the same run (epoch e's is the model an e-epoch run saves)."""
    from embedfactory.training.encoder import save_student
    from embedfactory.training.trainer import train_contrastive

    key = stable_hash(rows, cfg.fingerprint_fields(), length=16)
    folder = Path(store.root) / "bench-models" / key
    wanted = range(1, cfg.epochs + 1) if snapshots else [cfg.epochs]
    out = {e: str(folder if e == cfg.epochs else folder.with_name(f"{key}-epoch{e}")) for e in wanted}
    if all((Path(f) / "modules.json").exists() for f in out.values()):
        return out
    started = time.monotonic()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        def keep(epoch: int, model) -> None:
            save_student(copy.deepcopy(model), f"{tmp}/{epoch}", cfg.query_prompt())

        report = train_contrastive(rows, cfg, f"{tmp}/{cfg.epochs}", epoch_end=keep if snapshots else None)
        for e, target in out.items():
            if Path(target).exists():  # a half-written folder from a killed run
                shutil.rmtree(target)
            os.replace(f"{tmp}/{e}", target)
    print(f"  trained {len(rows)} rows, {report['steps']} steps in {time.monotonic() - started:.0f} s "
          f"(loss {report['losses'][0]} -> {report['losses'][-1]})", flush=True)
    return out


def scores(store: Store, model: str, sets: dict[str, object], max_length: int) -> dict:
    """Main score per set for `model`, cached in the store by the model's content. Queries are embedded
    with the model's "query" prompt (the one it was trained with; none for the base), as flow `eval` does;
    every model reads texts up to the same `max_length` tokens, whatever length it was trained at."""
    from sentence_transformers import SentenceTransformer

    from embedfactory.evaluation import embedders, model_identity
    from embedfactory.models import embedding_model_path

    key = stable_hash(model_identity(store, model), sorted(sets), max_length, length=16)
    path = Path(store.root) / "bench-scores" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    loaded = SentenceTransformer(embedding_model_path(model))
    loaded.max_seq_length = max_length
    embed = embedders(loaded)
    embedded = {}  # dev and test share the corpus: embed it once

    def documents(texts: list[str]):
        if (key := tuple(texts)) not in embedded:
            embedded[key] = embed.documents(texts)
        return embedded[key]

    out = {}
    for name, data in sets.items():
        if isinstance(data, RetrievalData):
            out[name] = evalsets.retrieval_scores(documents, data, embed_queries=embed.queries)["ndcg@10"]
        else:
            out[name] = evalsets.sts_scores(embed.texts, data)["spearman"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def changed(cfg: TrainConfig, **fields) -> TrainConfig:
    return TrainConfig.model_validate({**cfg.model_dump(), **fields})


def _installed(model: str) -> bool:
    from embedfactory.models import embedding_model_path

    try:
        embedding_model_path(model)
        return True
    except Exception:  # the extra is not installed: the bench says so and uses the student
        return False


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--beir", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv); "
                     "default: Cranfield from ../shared/data")
    cli.add_argument("--docs", type=int, default=600, help="documents sampled to generate from")
    cli.add_argument("--queries-per-doc", type=int, default=1)
    cli.add_argument("--store", default="./bench-quality")
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument("--ks", default="1,3,10", help="round-trip k values tried on dev")
    cli.add_argument("--epochs", type=int, default=4, help="the most epochs: the number used (1 to this) "
                     "is chosen on dev from the snapshots of one run")
    cli.add_argument("--batch-size", type=int, default=32)
    cli.add_argument("--learning-rate", type=float, default=2e-5)
    cli.add_argument("--train-max-length", type=int, default=128, help="tokens per text in training "
                     "(all-MiniLM-L6-v2 was trained at 128; half of 256's compute per step)")
    cli.add_argument("--eval-max-length", type=int, default=256, help="tokens per text in evaluation, "
                     "the same for base and tuned (all-MiniLM-L6-v2's own limit)")
    cli.add_argument("--query-template", default="{query}", help="how anchors (and evaluation queries) "
                     "are shown to the model")
    stronger = EMBEDDED_TEACHER if _installed(EMBEDDED_TEACHER) else EMBEDDED_EMBEDDER
    cli.add_argument("--guide", default=stronger, help="GIST guide model (default: all-mpnet-base-v2 "
                     "when the `teacher` extra is installed, else the student itself)")
    cli.add_argument("--teacher", default=stronger, help="MarginMSE teacher: a bi-encoder or a "
                     "cross-encoder (hub id or folder)")
    cli.add_argument("--filter-models", default=",".join(dict.fromkeys([EMBEDDED_EMBEDDER, stronger])),
                     help="comma-separated: the round-trip filter models compared (the first is the default)")
    cli.add_argument("--base-url", default="embedded")
    cli.add_argument("--model", default=SynthParams().generator.model)
    cli.add_argument("--quick", action="store_true", help="only the chosen recipe, no ablations")
    args = cli.parse_args()
    args.ks = sorted(int(k) for k in args.ks.split(","))
    started = time.monotonic()

    if args.beir:
        folder = Path(args.beir)
        data, corpus_source, args.name = evalsets.load_beir(folder, "test"), str(folder), folder.name
    else:
        data, corpus_source, args.name = evalsets.load(CRANFIELD), str(evalsets.root(CRANFIELD)), "cranfield"
    dev, test = split_queries(data)
    sts = evalsets.load(STSB)
    store = Store(args.store)
    print(f"{args.name}: {len(data.corpus)} documents, {len(data.queries)} real queries "
          f"(dev {len(dev.queries)}, test {len(test.queries)}); generating from {args.docs} documents", flush=True)

    filters = args.filter_models.split(",")
    rows = generate(args, corpus_source, filters[0])
    print(f"generation + filter: {time.monotonic() - started:.0f} s", flush=True)
    base_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           query_template=args.query_template, mined_negatives=1, seed=args.seed,
                           max_seq_length=args.train_max_length)

    def evaluate(model: str) -> dict:
        return scores(store, model, {"dev": dev, "test": test, "stsb": sts}, args.eval_max_length)

    base = evaluate(EMBEDDED_EMBEDDER)
    # the strongest model on hand (guide and teacher) scored as it is: what distilling it can reach
    reference = {m: evaluate(m) for m in dict.fromkeys([args.guide, args.teacher]) if m != EMBEDDED_EMBEDDER}
    for m, result in [(EMBEDDED_EMBEDDER, base), *reference.items()]:
        print(f"  as shipped: {Path(m).name:26} dev {result['dev']:.4f}  test {result['test']:.4f}  "
              f"stsb {result['stsb']:.4f}", flush=True)
    gates = Counter((r["drop_reason"] or "").split(":")[0] for r in rows if (r["drop_reason"] or "").startswith("gate"))
    print(f"\ngenerated {len(rows)} valid queries; gates rejected {sum(gates.values())} "
          f"({sum(gates.values()) / max(len(rows), 1):.1%}): "
          + ", ".join(f"{g[5:]} {n}" for g, n in gates.most_common()), flush=True)

    table = []

    def variant(name: str, chosen: list[dict], cfg: TrainConfig, model: str | None = None) -> dict:
        result = evaluate(model or train(store, chosen, cfg)[cfg.epochs])
        table.append({"variant": name, "rows": len(chosen), "epochs": cfg.epochs, **result})
        print(f"  {name:34} rows {len(chosen):5d}  dev {result['dev']:.4f}  test {result['test']:.4f}  "
              f"stsb {result['stsb']:.4f}", flush=True)
        return result

    # the number of epochs: one run on every gated row, a snapshot after each epoch, chosen on dev
    unfiltered = select(rows, None)
    print(f"epochs, chosen on dev (no round-trip filter, one run of {args.epochs} epochs)", flush=True)
    snapshots = train(store, unfiltered, changed(base_cfg, epochs=args.epochs), snapshots=True)
    by_epoch = {e: variant(f"epochs={e}", unfiltered, changed(base_cfg, epochs=e), model)
                for e, model in snapshots.items()}
    epochs = max(by_epoch, key=lambda e: by_epoch[e]["dev"])
    base_cfg = changed(base_cfg, epochs=epochs)

    print(f"round-trip k, chosen on dev at {epochs} epochs (filter: {filters[0]})", flush=True)
    tried = {k: variant(f"k={k}", select(rows, k), base_cfg) for k in args.ks}
    tried[None] = by_epoch[epochs]
    best_k = max(tried, key=lambda k: tried[k]["dev"])
    chosen = select(rows, best_k)
    best = ("infonce", base_cfg, tried[best_k])
    if not args.quick:
        print(f"ablations at k={best_k}, {epochs} epochs", flush=True)
        variant("no gates", select(rows, best_k, gates=False), base_cfg)
        variant("no mined negatives", select(rows, best_k, mined=False),
                changed(base_cfg, mined_negatives=0))
        # KaLM's training settings against the project's defaults, each chosen on dev
        for name, option in [("infonce, temperature 0.01", changed(base_cfg, temperature=0.01)),
                             ("infonce, 1 mined negative", changed(base_cfg, mined_negatives=1))]:
            result = variant(f"{name.split(', ')[1]}" + (" (KaLM)" if "0.01" in name else " (before)"), chosen, option)
            if result["dev"] > best[2]["dev"]:
                best = (name, option, result)
        gist = changed(base_cfg, loss="gist", guide_model=args.guide)  # temperature 0.01 (GIST_TEMPERATURE)
        result = variant(f"GIST (guide {Path(args.guide).name})", chosen, gist)
        if result["dev"] > best[2]["dev"]:
            best = ("gist", gist, result)
        margin = changed(base_cfg, loss="margin_mse", teacher_model=args.teacher)
        result = variant(f"MarginMSE (teacher {Path(args.teacher).name})", chosen, margin)
        if result["dev"] > best[2]["dev"]:
            best = ("margin_mse", margin, result)
        # the same rows, their round trip judged by another model, at the best filtering k on dev
        # (at "no filter" the filter model would change nothing)
        filter_k = max(args.ks, key=lambda k: tried[k]["dev"])
        for other in filters[1:]:
            again = reranked(store, rows, corpus_source, SynthParams().grounded.passage_words, other)
            variant(f"filter {other.split(':')[-1]}, k={filter_k}", select(again, filter_k), base_cfg)
    print(f"\nbest on dev: {best[0]}, k={best_k}, epochs={epochs}")
    for name, metric in (("test", "ndcg@10"), ("stsb", "spearman")):
        b, t = base[name], best[2][name]
        label = f"{args.name}-test" if name == "test" else "stsb-test"
        print(f"quality {label} {metric} base {b:.4f} tuned {t:.4f} delta {t - b:+.4f}")
    kept = len(chosen)
    print(f"accepted share: {kept}/{len(rows)} = {kept / max(len(rows), 1):.1%} of valid queries")
    print(f"total {time.monotonic() - started:.0f} s")
    Path(args.store, f"quality-{args.name}.json").write_text(json.dumps(
        {"base": base, "reference": reference, "variants": table, "best": {"recipe": best[0], "k": best_k, "epochs": epochs, **best[2]},
         "gates": dict(gates), "rows": len(rows), "accepted": kept}, indent=1))


if __name__ == "__main__":
    main()
