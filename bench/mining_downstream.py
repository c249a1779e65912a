"""Does mining help? Fine-tune all-MiniLM-L6-v2 on real STS Benchmark paraphrase pairs (train split,
score >= 4) with in-batch negatives only vs with our mined hard negatives added, same seed and
steps, and score retrieval on the test split's pairs (dev and test sentences as the corpus).

    python bench/mining_downstream.py [--negatives 3] [--epochs 1]
"""
from __future__ import annotations

import argparse
import tempfile

from sentence_transformers import SentenceTransformer

from embedfactory.config import EMBEDDED_EMBEDDER, TrainConfig
from embedfactory.eval.paired import SHARED_DATA, sts_pairs
from embedfactory.eval.heldout import pair_retrieval
from embedfactory.filter.consistency import Mining, encoder, ranking_consistency
from embedfactory.models import embedding_model_path, load_embedder
from embedfactory.training.trainer import train_contrastive


def held_out() -> tuple[list[str], list[str], list[int]]:
    test = sts_pairs(SHARED_DATA / "stsbenchmark" / "sts-test.csv")
    distractors = [r["positive"] for r in sts_pairs(SHARED_DATA / "stsbenchmark" / "sts-dev.csv", 0.0)]
    documents = list(dict.fromkeys([r["positive"] for r in test] + distractors))
    where = {d: i for i, d in enumerate(documents)}
    return [r["anchor"] for r in test], documents, [where[r["positive"]] for r in test]


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--negatives", type=int, default=3)
    cli.add_argument("--epochs", type=int, default=1)
    args = cli.parse_args()
    rows = sts_pairs()
    mined = ranking_consistency(rows, encoder(load_embedder(EMBEDDED_EMBEDDER)), topk=None,
                                mining=Mining(args.negatives, 10, 50, relative_margin=0.05))
    train = [{**r, "instruction": "", "mined_negatives": m["mined_negatives"]} for r, m in zip(rows, mined)]
    queries, documents, relevant = held_out()
    print(f"train: {len(train)} pairs; held out: {len(queries)} queries over {len(documents)} documents")
    base = pair_retrieval(encoder(SentenceTransformer(embedding_model_path(EMBEDDED_EMBEDDER))), queries,
                          documents, relevant)
    results = {"base model": base}
    for name, use in (("in-batch negatives", 0), (f"+ {args.negatives} mined negatives", args.negatives)):
        cfg = TrainConfig(epochs=args.epochs, batch_size=32, learning_rate=2e-5, query_template="{query}",
                          mined_negatives=use)
        with tempfile.TemporaryDirectory() as out:
            report = train_contrastive(train, cfg, out)
            results[name] = pair_retrieval(encoder(SentenceTransformer(out)), queries, documents, relevant)
        print(f"{name}: {report['steps']} steps in {report['seconds']} s, final loss {report['losses'][-1]}")
    print(f"{'model':28} {'nDCG@10':>8} {'MRR@10':>6} {'R@10':>6}")
    for name, s in results.items():
        print(f"{name:28} {s['ndcg@10']:8.4f} {s['mrr@10']:6.3f} {s['recall@10']:6.3f}")


if __name__ == "__main__":
    main()
