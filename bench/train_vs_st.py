"""Our GIST training vs sentence-transformers' GISTEmbedLoss and CachedGISTEmbedLoss, through the same
`SentenceTransformerTrainer`, same run.

Both sides train with sentence-transformers' Trainer on the same arguments (`trainer.training_arguments`)
and batches (`sampler.RowBatchSampler`); they differ in the loss only: ours (`gist.GISTLoss`) embeds
every distinct text with the guide once before the first step and looks it up, GISTEmbedLoss runs the
guide on every batch. Same student and guide (the embedded all-MiniLM-L6-v2 for both), same triplets,
batch, temperature, learning rate and maximum length; one epoch. Each run is its own process, so its
peak resident memory (ru_maxrss) is its own; every configuration runs `--runs` times and its best
(fastest) run counts. Prints triplets/s and peak memory per configuration, then the loss check: the
first steps' losses of our loss and GISTEmbedLoss from the same weights (dropout off, so both see the
same function) must agree. The student trains with dropout off on both
sides by default (`--dropout on` keeps it: the first training losses then differ by the draw of the
masks, e.g. 1.979 vs 1.013 at temperature 0.01, while the dropout-off losses agree to 1e-5).

Triplets are real (Cranfield): a query (8-40 tokens), its most relevant document and a less
relevant judged one (60-256 tokens): `--lengths mix`. `--lengths long` makes the anchors documents too
(every text long, cut at `--max-len` tokens).

    python bench/train_vs_st.py --steps 8 --batch 16 --runs 3 [--lengths long --max-len 128] [--device cuda]

GPU (the issue's reference shape): `--student qwen2-0.5b` is a randomly initialised Qwen2-0.5B-shaped
encoder (24 layers, hidden 896, GQA 14/2 heads, vocabulary 151936; a byte-level BPE
trained on Cranfield), last-token pooled, trained under bf16 autocast with gradient
checkpointing on both sides; the guide stays MiniLM. `--layers` shrinks it for a CPU smoke run.

    python bench/train_vs_st.py --device cuda --student qwen2-0.5b --batch 64 --mini-batch 32 --steps 6
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from embedfactory.eval import sets as evalsets
from embedfactory.config import EMBEDDED_EMBEDDER, TrainConfig
from embedfactory.models import embedding_model_path

CONFIGS = ["st-gist", "st-cached-gist", "ours", "ours-gradcache"]


def triplets(n: int, lengths: str) -> list[dict]:
    data = evalsets.load_cranfield(evalsets.root(evalsets.SHIPPED["cranfield"]))
    rows, used = [], set()
    for qid, judged in data.qrels.items():
        ranked = sorted(judged, key=lambda d: -judged[d])
        # each document once: a repeated text would be a tie that the two losses break differently
        if len(ranked) > 1 and judged[ranked[0]] > judged[ranked[-1]] and not {ranked[0], ranked[-1]} & used:
            used.update((ranked[0], ranked[-1]))
            rows.append({"anchor": data.queries[qid], "positive": data.corpus[ranked[0]],
                         "negative": data.corpus[ranked[-1]], "instruction": "cranfield"})
    if lengths == "long":  # anchors become documents too
        rows = [{**r, "anchor": rows[(i + 1) % len(rows)]["negative"]} for i, r in enumerate(rows)]
    # repeated rounds get a marker, so that no text repeats within the run
    return [{k: v if k == "instruction" or i < len(rows) else f"{v} [{i // len(rows)}]" for k, v in
             rows[i % len(rows)].items()} for i in range(n)]


def qwen2_shaped(folder: str, layers: int) -> str:
    """A random-init Qwen2-0.5B-shaped sentence-transformers folder (last-token pooling). Its tokenizer is
    a byte-level BPE trained here on Cranfield (Qwen's own cannot be downloaded), so token counts are
    realistic; ids stay below the real vocabulary size, which keeps the embedding table's shape."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Config, Qwen2Model

    data = evalsets.load_cranfield(evalsets.root(evalsets.SHIPPED["cranfield"]))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer, tokenizer.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tokenizer.train_from_iterator([*data.corpus.values(), *data.queries.values()], trainers.BpeTrainer(
        vocab_size=16000, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    Path(folder).mkdir(parents=True, exist_ok=True)
    tokenizer.save(f"{folder}/tokenizer.json")
    Path(folder, "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "Qwen2Tokenizer", "pad_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}))
    torch.manual_seed(0)
    Qwen2Model(Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=layers,
                           num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)).save_pretrained(folder)
    SentenceTransformer(modules=[Transformer(folder), Pooling(896, pooling_mode="lasttoken"), Normalize()]).save(folder)
    return folder


def student_path(args) -> str:
    """The student both sides train: a copy in `args.student_dir`, with dropout off unless `--dropout on`
    (then the first steps' losses are a draw of the dropout masks, which the two sides make differently)."""
    if args.student == "qwen2-0.5b":
        return qwen2_shaped(args.student_dir, args.layers)  # Qwen2 has no dropout by default
    import shutil

    shutil.copytree(embedding_model_path(EMBEDDED_EMBEDDER), args.student_dir, dirs_exist_ok=True)
    if args.dropout == "off":
        config = Path(args.student_dir, "config.json")
        fields = json.loads(config.read_text())
        config.write_text(json.dumps({**fields, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    return args.student_dir


def cfg_for(args) -> TrainConfig:
    big = args.student == "qwen2-0.5b"
    return TrainConfig(base_model=args.student_path, guide_model=EMBEDDED_EMBEDDER, batch_size=args.batch,
                       learning_rate=2e-5, temperature=0.01, max_seq_length=args.max_len, mined_negatives=0,
                       query_template="{query}", device=args.device, mini_batch_size=args.mini_batch,
                       checkpoint_every=10**6, eval_sets=[], gradient_checkpointing=big,
                       precision="bf16" if big and args.device.startswith("cuda") else "fp32")


def run_ours(args, rows, cached: bool) -> dict:
    import tempfile

    from embedfactory.training.trainer import train_contrastive

    cfg = cfg_for(args).model_copy(update={"grad_cache": cached})
    with tempfile.TemporaryDirectory() as out:
        report = train_contrastive(rows, cfg, out)
    return {"seconds": report["seconds"], "losses": report["losses"]}


def run_st(args, rows, cached: bool) -> dict:
    """GISTEmbedLoss (or its cached version) through the Trainer, on the arguments and batches ours gets;
    timed as ours is: from loading the guide to the saved model."""
    import functools
    import tempfile

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import CachedGISTEmbedLoss, GISTEmbedLoss

    from embedfactory.training.sampler import RowBatchSampler, batches
    from embedfactory.training.trainer import training_arguments

    cfg = cfg_for(args)
    torch.manual_seed(cfg.seed)
    model = SentenceTransformer(args.student_path, device=args.device)
    model.max_seq_length = args.max_len
    if cfg.gradient_checkpointing:
        model[0].auto_model.gradient_checkpointing_enable()
    started = time.monotonic()
    guide = SentenceTransformer(embedding_model_path(EMBEDDED_EMBEDDER), device=args.device).eval()
    guide.max_seq_length = args.max_len
    loss = (CachedGISTEmbedLoss(model, guide, temperature=0.01, mini_batch_size=args.mini_batch) if cached
            else GISTEmbedLoss(model, guide, temperature=0.01))
    data = Dataset.from_dict({c: [r[c] for r in rows] for c in ("anchor", "positive", "negative")})
    with tempfile.TemporaryDirectory() as work:
        steps = len(batches(rows, cfg.batch_size, cfg.seed))
        trainer = SentenceTransformerTrainer(model=model, train_dataset=data, loss=loss,
                                             args=training_arguments(cfg, torch.device(args.device), work, steps))
        trainer.args.batch_sampler = functools.partial(RowBatchSampler, rows=rows)
        trainer.train()
        model.save(f"{work}/model")
    return {"seconds": round(time.monotonic() - started, 2),
            "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e]}


def loss_check(args, rows, steps: int = 3) -> list[tuple[float, float]]:
    """Our loss and GISTEmbedLoss on the same batches from the same weights, dropout off."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.trainer import BaseTrainer
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss

    from embedfactory.training.data import RowCollator, RowTable
    from embedfactory.training.gist import GISTLoss, GuideTable

    model = SentenceTransformer(args.student_path, device=args.device).eval()
    guide = SentenceTransformer(embedding_model_path(EMBEDDED_EMBEDDER), device=args.device).eval()
    model.max_seq_length = guide.max_seq_length = args.max_len
    reference, pairs = GISTEmbedLoss(model, guide, temperature=0.01), []
    with torch.no_grad():
        for s in range(0, steps * args.batch, args.batch):
            chunk = rows[s:s + args.batch]
            theirs = reference([_features(model, [r[c] for r in chunk]) for c in ("anchor", "positive", "negative")],
                               None).item()
            table = RowTable.from_rows(chunk, "{query}", 0)
            inputs = RowCollator(model.preprocess)([{"anchor": a, "positive": p, "negatives": n, "label": i} for i, (a, p, n)
                                                    in enumerate(zip(table.anchors, table.positives, table.negatives))])
            features, labels = BaseTrainer.collect_features(None, inputs)
            features = [{k: v.to(model.device) if torch.is_tensor(v) else v for k, v in f.items()} for f in features]
            mine = GISTLoss(model, table, GuideTable(guide, table, args.mini_batch), 0.01)(features, labels).item()
            pairs.append((round(mine, 5), round(theirs, 5)))
    return pairs


def _features(model, texts: list[str]) -> dict:
    return {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in model.preprocess(texts).items()}


def child(args) -> None:
    rows = triplets(args.steps * args.batch, args.lengths)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    run = {"st-gist": lambda: run_st(args, rows, False), "st-cached-gist": lambda: run_st(args, rows, True),
           "ours": lambda: run_ours(args, rows, False), "ours-gradcache": lambda: run_ours(args, rows, True),
           "loss-check": lambda: {"pairs": loss_check(args, rows, min(3, args.steps))}}[args.child]
    result = run()
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if args.device.startswith("cuda"):
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print("RESULT " + json.dumps(result))


def main() -> None:
    cli = argparse.ArgumentParser()
    cli.add_argument("--steps", type=int, default=8)
    cli.add_argument("--batch", type=int, default=16)
    cli.add_argument("--mini-batch", type=int, default=16)
    cli.add_argument("--max-len", type=int, default=256)
    cli.add_argument("--lengths", choices=["mix", "long"], default="mix")
    cli.add_argument("--device", default="cpu")
    cli.add_argument("--student", choices=["minilm", "qwen2-0.5b"], default="minilm")
    cli.add_argument("--layers", type=int, default=24, help="layers of the qwen2-0.5b student")
    cli.add_argument("--dropout", choices=["off", "on"], default="off", help="the student's dropout in "
                     "training, both sides (off: the same weights and batch give the same loss)")
    cli.add_argument("--runs", type=int, default=3, help="runs per configuration; the fastest counts")
    cli.add_argument("--student-dir", help=argparse.SUPPRESS)
    cli.add_argument("--child", choices=[*CONFIGS, "loss-check"])
    args = cli.parse_args()
    if args.child:
        args.student_path = args.student_dir
        return child(args)
    import tempfile

    args.student_dir = tempfile.mkdtemp(prefix="bench-student-")
    student_path(args)  # built once, so every configuration starts from the same weights
    argv = [*sys.argv[1:], "--student-dir", args.student_dir]
    results = {}
    for name in [*CONFIGS, "loss-check"]:
        runs = []
        for _ in range(args.runs if name != "loss-check" else 1):
            done = subprocess.run([sys.executable, __file__, *argv, "--child", name], capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(line[7:]))
        results[name] = min(runs, key=lambda r: r.get("seconds", 0))
        if name != "loss-check":
            results[name]["all_seconds"] = [r["seconds"] for r in runs]
    triplets_n = args.steps * args.batch
    print(f"student {args.student}, {triplets_n} Cranfield triplets ({args.lengths} lengths, max {args.max_len} tokens), batch {args.batch}, "
          f"mini-batch {args.mini_batch}, device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"best of {args.runs} runs each (seconds of every run in brackets)")
    print(f"{'config':16} {'triplets/s':>10} {'vs st-gist':>10} {'peak RSS MiB':>12}  first losses")
    base = triplets_n / results["st-gist"]["seconds"]
    for name in CONFIGS:
        r = results[name]
        speed = triplets_n / r["seconds"]
        print(f"{name:16} {speed:10.2f} {speed / base:9.2f}x {r['peak_rss_mib']:12}  {r['losses'][:3]} {r['all_seconds']}"
              + (f"  peak GPU {r['peak_gpu_gib']} GiB" if "peak_gpu_gib" in r else ""))
    pairs = results["loss-check"]["pairs"]
    worst = max(abs(a - b) for a, b in pairs)
    print(f"loss check, dropout off (ours, GISTEmbedLoss): {pairs}; largest difference {worst:.2e}")
    ours, theirs = results["ours"]["losses"][0], results["st-gist"]["losses"][0]
    print(f"first training step (same weights and batch, dropout {args.dropout}): ours {ours}, "
          f"GISTEmbedLoss {theirs}, difference {abs(ours - theirs):.2e}")
    print(f"ours vs GISTEmbedLoss: {triplets_n / results['ours']['seconds'] / base:.2f}x triplets/s")


if __name__ == "__main__":
    main()
