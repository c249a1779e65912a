"""The factory's reason to exist, measured: does training on its data make a model better on real queries,
by more than the noise and more than simple baselines that need no LLM?

For each collection (default: Cranfield and CISI from ../shared/data; `--beir DIR` for any BEIR folder),
the factory writes queries for `--docs` sampled documents with flow `synth` (grounded, embedded generator;
never the collection's own queries), gated as the flow gates them. A teacher that knows more than the
student (EmbeddingGemma-300M) ranks the whole corpus for every query (`embedfactory.filter.labels`): it judges
the round trip (the query's own document within its top `--teacher-k`), mines hard negatives at its
ranks 3-30 (candidates above 95% of the positive's score left out) and scores them; the student
(all-MiniLM-L6-v2) learns InfoNCE plus the teacher's margins (MarginMSE; `--loss kl_infonce`: its ranking
of each row's list, listwise KL). Every document with a title
also gives a pair: its title as the query for its body.

Trained with `--seeds` seeds each, all in the same run, on the same evaluation:
- recipe: the gated, teacher-filtered LLM queries and the title pairs, teacher labels;
- baseline genq: every generated query, no gates, no filter, in-batch negatives only (GenQ);
- baseline titles: title -> body pairs, in-batch negatives only (no LLM, no teacher);
- baseline titles+teacher: the title pairs with the teacher's negatives and margins (no LLM).
Every judged query is scored; a recipe's per-query nDCG@10 is its mean over seeds; differences get a
paired bootstrap 95% interval over queries (`embedfactory.eval.significance`). `--ablations` adds one-seed
variants of the recipe. `--variants` trains a subset (without recipe and genq no LLM runs: the
title baselines alone). Generation, teacher embeddings, trained models and scores are kept in the
store, so a rerun takes minutes.

    python bench/quality.py [--sets cranfield,cisi] [--beir DIR ...] [--docs 60] [--seeds 3]
    python bench/quality.py --variants titles,titles+teacher --negatives 7 --loss kl_infonce --seeds 1

Prints `quality <set> ndcg@10 base X tuned Y delta Z ci [LO, HI]`, then per baseline
`quality <set> baseline <name> ndcg@10 Y delta Z ci [LO, HI]` (the recipe minus the baseline), and
`quality <set> stsb spearman base X tuned Y delta Z` (the recipe's models on STS-B).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline machines: no telemetry errors in the log
# the flow's temporary Prefect API starts beside a busy generator; Prefect's default wait is short
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import numpy as np  # noqa: E402

from embedfactory.eval import sets as evalsets
from embedfactory.filter import labels  # noqa: E402
from embedfactory.config import EMBEDDED_EMBEDDER, EMBEDDED_GEMMA, SynthParams, TrainConfig  # noqa: E402
from embedfactory.eval.sets import RetrievalData  # noqa: E402
from embedfactory.ids import stable_hash  # noqa: E402
from embedfactory.eval.significance import mean_scores, paired_bootstrap  # noqa: E402
from embedfactory.store import StageDir, Store  # noqa: E402

STSB = evalsets.SHIPPED["stsb-test"]
SHIPPED_SETS = ("cranfield", "cisi")
VARIANTS = ("recipe", "genq", "titles", "titles+teacher")
LLM_VARIANTS = {"recipe", "genq"}


def generate(args, name: str, corpus_source: str) -> list[dict]:
    """Run flow `synth` (grounded only, no training) and return its valid verdict rows (gated or not)."""
    from flows.synth import synth

    params = SynthParams(
        store=args.store, run_id=f"quality-{name}-{args.docs}-{args.seed}", dataset_name=f"quality-{name}",
        synth={"seed": args.seed}, grounded={"corpus": corpus_source, "documents": args.docs or None,
                                             "queries_per_passage": args.queries_per_doc},
        filter={"model": EMBEDDED_EMBEDDER, "topk": 10, "dedupe_against": []},
        generator={"base_url": args.base_url, "model": args.model}, train=None)
    result = synth(params)
    rows = StageDir(Store(args.store), result["run_id"], "verdicts").read(ok_only=False).to_pylist()
    return [r for r in rows if r.get("status", "ok") == "ok" and r.get("source_id")]


def embedded(store: Store, model: str, texts: list[str], side: str, max_length: int) -> np.ndarray:
    """L2-normalised embeddings of `texts` as queries or documents (`side`), kept in the store."""
    from embedfactory.models import load_embedder

    path = Path(store.root) / "bench-embeddings" / f"{stable_hash(model, side, max_length, texts, length=16)}.npy"
    if not path.exists():
        started = time.monotonic()
        loaded = load_embedder(model, "cpu")
        loaded.max_seq_length = max_length
        encode = loaded.encode_query if side == "query" else loaded.encode_document
        vectors = encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
        print(f"  {Path(model).name}: {len(texts)} {side} texts embedded in {time.monotonic() - started:.0f} s",
              flush=True)
    return np.load(path)


def body(data: RetrievalData, doc: str) -> str:
    """The document without its title (the positive a title pair learns)."""
    title, text = data.titles.get(doc, ""), data.corpus[doc]
    return text[len(title):].strip() if title and text.startswith(title) else text


def labelled(queries: list[dict], data: RetrievalData, doc_ids: list[str], vectors: np.ndarray,
             docs: np.ndarray, negatives: int, title_pairs: bool = False) -> list[dict]:
    """Training rows for (query row, its document): the teacher's rank of the document, its hard
    negatives (texts) and scores. Title pairs learn bodies (titles removed), the others whole documents."""
    index = {d: i for i, d in enumerate(doc_ids)}
    found = labels.label(vectors, docs, [index[q["doc"]] for q in queries], negatives)
    text = (lambda d: body(data, d)) if title_pairs else (lambda d: data.corpus[d])
    return [{"anchor": q["anchor"], "positive": text(q["doc"]), "negative": None, "instruction": q["task"],
             "task_type": "retrieval", "gate": q.get("gate"), "student_rank": q.get("student_rank"),
             "teacher_rank": rank, "mined_negatives": [text(doc_ids[i]) for i in negs], "teacher_scores": scores}
            for q, rank, negs, scores in zip(queries, found.rank, found.negatives, found.scores)]


def train(store: Store, rows: list[dict], cfg: TrainConfig) -> str:
    """The model folder for (rows, cfg), trained once per store and version of the training code."""
    from embedfactory.training.job import training_code
    from embedfactory.training.trainer import train_contrastive

    folder = Path(store.root) / "bench-models" / stable_hash(rows, cfg.fingerprint_fields(), training_code(), length=16)
    if (folder / "modules.json").exists():
        return str(folder)
    started = time.monotonic()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        report = train_contrastive(rows, cfg, f"{tmp}/model")
        shutil.rmtree(folder, ignore_errors=True)  # a half-written folder from a killed run
        os.replace(f"{tmp}/model", folder)
    print(f"  trained {report['rows']} rows, {report['steps']} steps in {time.monotonic() - started:.0f} s "
          f"(loss {report['losses'][0]:.3f} -> {report['losses'][-1]:.3f})", flush=True)
    return str(folder)


def scores(store: Store, model: str, data: RetrievalData, set_name: str, max_length: int) -> dict:
    """Per-query nDCG@10 on `data` and STS-B spearman for `model`, cached in the store by its content."""
    from sentence_transformers import SentenceTransformer

    from embedfactory.eval.heldout import embedders, model_identity, sts_scores
    from embedfactory.models import embedding_model_path

    key = stable_hash(model_identity(store, model), set_name, len(data.queries), max_length, length=16)
    path = Path(store.root) / "bench-scores" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    loaded = SentenceTransformer(embedding_model_path(model), device="cpu")
    loaded.max_seq_length = max_length
    embed = embedders(loaded)
    found = evalsets.retrieval_scores(embed.documents, data, embed_queries=embed.queries, per_query=True)
    out = {"per_query": found["per_query_ndcg"], "ndcg@10": found["ndcg@10"],
           "stsb": sts_scores(loaded, evalsets.load(STSB))["spearman"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def teacher_scores_on(data: RetrievalData, queries: np.ndarray, docs: np.ndarray) -> dict[str, float]:
    """The teacher's own per-query nDCG@10 on the real queries, from embeddings already made (in the
    order of `data.queries` and `data.corpus`)."""
    return evalsets.retrieval_scores(lambda texts: docs, data, embed_queries=lambda texts: queries,
                                     per_query=True)["per_query_ndcg"]


def collections(args) -> list[tuple[str, RetrievalData, str]]:
    out = []
    for name in [s for s in args.sets.split(",") if s]:
        if name not in SHIPPED_SETS:
            raise SystemExit(f"--sets: {name!r} is not one of {', '.join(SHIPPED_SETS)} (use --beir DIR)")
        out.append((name, evalsets.load(evalsets.SHIPPED[name]), str(evalsets.root(evalsets.SHIPPED[name]))))
    for folder in args.beir:
        if not (Path(folder) / "corpus.jsonl").is_file():
            raise SystemExit(f"--beir {folder}: no corpus.jsonl there")
        out.append((Path(folder).name, evalsets.load_beir(Path(folder), "test"), str(folder)))
    if not out:
        raise SystemExit("nothing to measure: give --sets or --beir")
    return out


def run_set(args, store: Store, name: str, data: RetrievalData, source: str, cfg: TrainConfig) -> dict:
    started = time.monotonic()
    doc_ids = list(data.corpus)
    wanted = set(args.variants.split(","))
    llm = bool(wanted & LLM_VARIANTS)
    print(f"\n{name}: {len(data.corpus)} documents ({len(data.titles)} with titles), {len(data.queries)} "
          f"judged queries; queries generated for " + (f"{args.docs or len(data.corpus)} documents" if llm else
                                                      "no document (no LLM variant asked)"), flush=True)
    generated = generate(args, name, source) if llm else []
    queries = [{"anchor": r["anchor"], "doc": r["source_id"].split("#")[0], "task": r["task"],
                "gate": r["drop_reason"] if r["drop_kind"] == "gate" else None,
                "gate_name": r["drop_name"] if r["drop_kind"] == "gate" else None,
                "duplicate": r["drop_kind"] == "duplicate", "student_rank": r["rank"]}
               for r in generated if r["source_id"].split("#")[0] in data.corpus]
    gates = Counter(q["gate_name"] for q in queries if q["gate_name"])
    print(f"  generation: {len(queries)} valid queries in {time.monotonic() - started:.0f} s; gates rejected "
          f"{sum(gates.values())}: " + ", ".join(f"{g} {n}" for g, n in gates.most_common()), flush=True)

    # the teacher ranks the corpus for every query: generated, titles, and (for its own score) the real ones
    docs = embedded(store, args.teacher, [data.corpus[d] for d in doc_ids], "document", args.max_length)
    generated_rows = labelled(queries, data, doc_ids, embedded(store, args.teacher, [q["anchor"] for q in queries],
                                                               "query", args.max_length), docs,
                              args.negatives) if queries else []
    titled = [d for d in doc_ids if data.titles.get(d) and body(data, d)]
    title_queries = [{"anchor": data.titles[d], "doc": d, "task": "title"} for d in titled]
    title_rows = labelled(title_queries, data, doc_ids, embedded(store, args.teacher, [data.titles[d] for d in titled],
                                                                 "query", args.max_length), docs, args.negatives,
                          title_pairs=True) if titled else []
    teacher = teacher_scores_on(data, embedded(store, args.teacher, list(data.queries.values()), "query",
                                               args.max_length), docs)
    for row, q in zip(generated_rows, queries):
        row["duplicate"] = q["duplicate"]

    kept = [r for r in generated_rows if not r["gate"] and not r["duplicate"] and r["teacher_rank"] <= args.teacher_k]
    student_solved = sum(r["student_rank"] is not None and r["student_rank"] <= 1 for r in kept)
    print(f"  recipe rows: {len(kept)} generated (gates, no duplicate, teacher rank <= {args.teacher_k}; "
          f"{student_solved} of them the student already ranks first) + {len(title_rows)} title pairs", flush=True)
    teach = TrainConfig.model_validate({**cfg.model_dump(), "loss": args.loss,
                                        "teacher_model": args.teacher, "mined_negatives": args.negatives})
    plain = TrainConfig.model_validate({**cfg.model_dump(), "mined_negatives": 0})
    bare = [{**r, "mined_negatives": [], "teacher_scores": None} for r in generated_rows]
    variants = {
        "recipe": (kept + (title_teacher := [r for r in title_rows if len(r["teacher_scores"]) > 1]), teach),
        "genq": (bare, plain),
        "titles": ([{**r, "mined_negatives": [], "teacher_scores": None} for r in title_rows], plain),
        "titles+teacher": (title_teacher, teach),
    }
    variants = {v: got for v, got in variants.items() if v in wanted}
    seeds = range(args.seeds)
    if args.ablations:  # one seed each, the same shards and labels
        swap = lambda **f: TrainConfig.model_validate({**teach.model_dump(), **f})  # noqa: E731
        with_negatives = [r for r in kept if len(r["teacher_scores"]) > 1]
        variants |= {
            "recipe, no titles": (with_negatives, teach),
            "recipe, MarginMSE alone": (variants["recipe"][0], swap(loss="margin_mse")),
            **({"recipe, listwise KL + InfoNCE": (variants["recipe"][0], swap(loss="kl_infonce"))}
               if args.loss != "kl_infonce" else
               {"recipe, MarginMSE + InfoNCE": (variants["recipe"][0], swap(loss="margin_mse_infonce"))}),
            "recipe, InfoNCE on teacher negatives": (variants["recipe"][0],
                                                     swap(loss="infonce", teacher_model=None)),
            "recipe, no gates": ([r for r in generated_rows if not r["duplicate"] and r["teacher_rank"] <= args.teacher_k
                                  and len(r["teacher_scores"]) > 1] + title_teacher, teach),
            "recipe, no teacher filter": ([r for r in generated_rows if not r["gate"] and not r["duplicate"]
                                           and len(r["teacher_scores"]) > 1] + title_teacher, teach),
        }
    runs: dict[str, list[dict]] = {}
    for variant, (rows, option) in variants.items():
        if len(rows) < 2:
            print(f"  {variant}: {len(rows)} rows, not trained", flush=True)
            continue
        print(f"  {variant}: {len(rows)} rows", flush=True)
        use = seeds if variant in VARIANTS else [0]
        runs[variant] = [scores(store, train(store, rows, option.model_copy(update={"seed": s})), data, name,
                                args.max_length) for s in use]
    base = scores(store, EMBEDDED_EMBEDDER, data, name, args.max_length)
    return {"base": base, "runs": runs, "teacher": teacher, "rows": {v: len(r) for v, (r, _) in variants.items()},
            "gates": dict(gates), "generated": len(queries), "kept": len(kept), "examples": kept + title_rows,
            "seconds": round(time.monotonic() - started)}


def report(name: str, result: dict, resamples: int) -> dict:
    base = result["base"]["per_query"]
    teacher = result["teacher"]
    mean = {v: mean_scores([r["per_query"] for r in runs]) for v, runs in result["runs"].items()}
    stsb = {v: float(np.mean([r["stsb"] for r in runs])) for v, runs in result["runs"].items()}
    out = {"base": float(np.mean(list(base.values()))), "teacher": float(np.mean(list(teacher.values()))),
           "variants": {}}
    print(f"\n{name}: {len(base)} judged queries; per recipe the mean of its seeds' per-query nDCG@10")
    print(f"teacher {name} ndcg@10 {out['teacher']:.4f} (EmbeddingGemma-300M as it is)")
    recipe = mean.get("recipe")
    for variant, scored in mean.items():
        vs_base = paired_bootstrap(base, scored, resamples)
        seeds = [round(r["ndcg@10"], 4) for r in result["runs"][variant]]
        out["variants"][variant] = {"ndcg@10": float(np.mean(list(scored.values()))), "vs_base": vs_base.__dict__,
                                    "seeds": seeds, "stsb": stsb[variant], "rows": result["rows"][variant]}
        if variant == "recipe":
            print(f"quality {name} ndcg@10 base {out['base']:.4f} tuned {np.mean(list(scored.values())):.4f} "
                  f"{vs_base} seeds {seeds}")
        elif variant in VARIANTS and recipe is None:
            print(f"quality {name} baseline {variant} ndcg@10 {np.mean(list(scored.values())):.4f} vs base "
                  f"{vs_base} seeds {seeds} stsb {stsb[variant]:.4f}")
        elif variant in VARIANTS:
            vs = paired_bootstrap(scored, recipe, resamples)
            out["variants"][variant]["recipe_minus"] = vs.__dict__
            print(f"quality {name} baseline {variant} ndcg@10 {np.mean(list(scored.values())):.4f} {vs} "
                  f"(vs base {vs_base.delta:+.4f} [{vs_base.low:+.4f}, {vs_base.high:+.4f}]) seeds {seeds}")
        else:
            print(f"  ablation {variant:38} ndcg@10 {np.mean(list(scored.values())):.4f} vs base {vs_base} "
                  f"stsb {stsb[variant]:.4f}")
    if "recipe" in stsb:
        b = result["base"]["stsb"]
        print(f"quality {name} stsb spearman base {b:.4f} tuned {stsb['recipe']:.4f} delta {stsb['recipe'] - b:+.4f}")
    print(f"{name}: {result['seconds']} s")
    return out


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--sets", default=",".join(SHIPPED_SETS), help="shipped collections (cranfield, cisi); "
                     "'' for none")
    cli.add_argument("--beir", action="append", default=[], help="a BEIR folder (corpus.jsonl, queries.jsonl, "
                     "qrels/test.tsv); repeatable")
    cli.add_argument("--docs", type=int, default=60, help="documents per collection the LLM writes queries for "
                     "(0: every document; on 2 CPU cores the 1.5B writes about 3 queries a minute)")
    cli.add_argument("--queries-per-doc", type=int, default=1)
    cli.add_argument("--seeds", type=int, default=3, help="trainings per recipe and baseline")
    cli.add_argument("--store", default="./bench-quality")
    cli.add_argument("--seed", type=int, default=0, help="the generation's seed")
    cli.add_argument("--teacher", default=EMBEDDED_GEMMA, help="the teacher (any embedding model id)")
    cli.add_argument("--teacher-k", type=int, default=10, help="round trip: the teacher's top k must hold "
                     "the query's own document")
    cli.add_argument("--negatives", type=int, default=2, help="teacher-mined hard negatives per row")
    cli.add_argument("--loss", default="margin_mse_infonce", choices=["margin_mse_infonce", "kl_infonce", "margin_mse"],
                     help="how the recipe and titles+teacher learn the teacher: its margins (MarginMSE) or its "
                     "ranking of each row's list (listwise KL), each beside InfoNCE")
    cli.add_argument("--max-length", type=int, default=256, help="tokens per text, training and evaluation")
    cli.add_argument("--epochs", type=int, default=1)
    cli.add_argument("--batch-size", type=int, default=32)
    cli.add_argument("--learning-rate", type=float, default=2e-5)
    cli.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples over queries")
    cli.add_argument("--base-url", default="embedded")
    cli.add_argument("--model", default=SynthParams().generator.model, help="the generator")
    cli.add_argument("--ablations", action="store_true", help="add one-seed variants of the recipe")
    cli.add_argument("--variants", default=",".join(VARIANTS), help="the recipe and baselines to train "
                     "(without recipe and genq no LLM runs)")
    args = cli.parse_args()
    if args.seeds < 1 or args.docs < 0:
        raise SystemExit("--seeds must be at least 1 and --docs at least 0 (0: every document)")
    if unknown := set(args.variants.split(",")) - set(VARIANTS):
        raise SystemExit(f"--variants: {', '.join(sorted(unknown))} not among {', '.join(VARIANTS)}")
    if args.ablations and "recipe" not in args.variants.split(","):
        raise SystemExit("--ablations vary the recipe: keep recipe in --variants")
    sets = collections(args)
    started = time.monotonic()
    store = Store(args.store)
    # gradient caching: a batch of 32 rows with 7 negatives each is 288 texts, whose activations at
    # 256 tokens outgrow 24 GiB (the same gradients, about a third more compute)
    cfg = TrainConfig(grad_cache=True, epochs=args.epochs, batch_size=args.batch_size,
                      learning_rate=args.learning_rate,
                      max_seq_length=args.max_length, warmup_ratio=0.1, lr_schedule="linear", max_grad_norm=1.0)
    results = {name: run_set(args, store, name, data, source, cfg) for name, data, source in sets}
    summary = {name: report(name, result, args.resamples) for name, result in results.items()}
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    Path(args.store).mkdir(parents=True, exist_ok=True)
    Path(args.store, "quality.json").write_text(json.dumps(
        {"args": vars(args), "sets": summary,
         "examples": {n: r["examples"][:50] for n, r in results.items()}}, indent=1, default=str))


if __name__ == "__main__":
    main()
