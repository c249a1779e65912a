"""A training job against the store: dataset in, model folder and report out, done once per
(dataset checksum, training config, trainer code)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa

from ..config import TrainConfig
from ..ids import code_version, stable_hash
from ..models import card_licence, hub_id, licence_lines
from ..publish.dataset import read_dataset
from ..publish.hub import data_models, with_front_matter
from ..report import plots
from ..store import Store
from . import checkpoints, data, encoder, gist, launch, listwise, loss, margin, rowloss, sampler, teacher, trainer
from .encoder import pick_device


def training_code() -> str:
    """The version of the code a trained model depends on."""
    return code_version(trainer, data, rowloss, loss, gist, margin, listwise, teacher, sampler, encoder)


def train_fingerprint(card: dict, cfg: TrainConfig) -> str:
    return stable_hash(card["sha256"], cfg.fingerprint_fields(), training_code())


def loss_line(cfg: TrainConfig) -> str:
    """The model card's description of the loss."""
    if cfg.loss == "gist":
        return (f"GISTEmbed, guide `{cfg.guide_model}`, {cfg.gist_margin_strategy} margin {cfg.gist_margin}; "
                f"temperature {cfg.softmax_temperature()}")
    if cfg.distils:
        kind = "cross-encoder" if teacher.is_cross_encoder(cfg.teacher_model) else "bi-encoder, cosine"
        if cfg.loss == "kl_infonce":
            return (f"listwise distillation (RocketQAv2), teacher `{cfg.teacher_model}` ({kind}): the KL divergence "
                    "of the student's softmax over each row's positive and hard negatives from the teacher's, "
                    f"plus InfoNCE over in-batch and hard negatives; temperature {cfg.softmax_temperature()}; "
                    "rows without a hard negative skipped")
        return (f"MarginMSE (GPL), teacher `{cfg.teacher_model}` ({kind}): its (query, positive) - "
                "(query, hard negative) score margins, student scores cosine; rows without a hard negative skipped"
                + ("; plus InfoNCE over in-batch and hard negatives, both on the logit scale (/ temperature "
                   f"{cfg.softmax_temperature()})" if cfg.loss == "margin_mse_infonce" else ""))
    return f"InfoNCE over in-batch and hard negatives (equal texts masked); temperature {cfg.softmax_temperature()}"


def model_card(card: dict, cfg: TrainConfig, report: dict) -> str:
    """What a trained model was made from and how: data version, loss, sampler, hyperparameters."""
    sampler_line = (f"semi-homogeneous batches by {cfg.homogeneous_key}, ratio {cfg.homogeneous_ratio}"
                    if cfg.homogeneous_ratio
                    else "shuffled batches")
    return "\n".join([
        "## Training (embedfactory)", "",
        f"- data: `{card['name']}/{card['version']}`, {report['rows']} rows"
        + (f" ({report['skipped_rows']} without a hard negative left out)" if report.get("skipped_rows") else "")
        + f", sha256 `{card['sha256']}`",
        f"- base model: `{cfg.base_model}`",
        f"- loss: {loss_line(cfg)}",
        f"- sampler: {sampler_line}; batch {cfg.batch_size}; {'all' if cfg.mined_negatives is None else cfg.mined_negatives} mined negatives per row",
        f"- epochs {cfg.epochs}, learning rate {cfg.learning_rate} ({schedule_line(cfg)}), max length {cfg.max_seq_length}, "
        f"seed {cfg.seed}, query template `{cfg.query_template!r}`, saved query prompt `{cfg.query_prompt()!r}`",
        f"- pooling {cfg.pooling}, Matryoshka widths {cfg.matryoshka_dims or 'none'}, "
        f"{'LoRA ' + str(cfg.lora.model_dump()) if cfg.lora else 'full fine-tuning'}, {cfg.precision}",
        f"- {report['steps']} steps, loss {report['losses'][0]} -> {report['losses'][-1]}",
        *(f"- terms of use: {line}" for line in licence_lines(
            [("base model", cfg.base_model), ("GIST guide", cfg.guide_model), ("MarginMSE teacher", cfg.teacher_model)]
            + [(f"{role} of the training data", name) for role, name in data_models(card.get("params") or {})])),
        ""])


def card_data(card: dict, cfg: TrainConfig) -> dict:
    """sentence-transformers' model card fields (`SentenceTransformerModelCardData`) of a model trained on
    the published dataset `card`; the Trainer adds the loss, hyperparameters and dataset statistics."""
    data = f"{card['name']}/{card['version']}"
    return {"model_name": f"{hub_id(cfg.base_model)} fine-tuned on {data}", "train_datasets": [{"name": data}],
            "license": card_licence(cfg.base_model, [cfg.guide_model, cfg.teacher_model,
                                                     *(name for _, name in data_models(card.get("params") or {}))])}


def with_section(readme: str, section: str) -> str:
    """`section` placed right after the README's YAML front matter (the Hub reads its metadata only
    at the very top), or at the top when there is none."""
    if readme.startswith("---\n") and (end := readme.find("\n---\n", 4)) != -1:
        return f"{readme[:end + 5]}\n{section}\n{readme[end + 5:]}"
    return f"{section}\n{readme}"


def with_eval_results(readme: str, rows: list[dict], model_name: str) -> str:
    """The card with the fine-tuned scores as the Hub's `model-index` in its front matter (one result
    per evaluation set) and their metric names as `metrics`, so the Hub shows them beside the model."""
    return with_front_matter(readme, metrics=sorted({r["metric"] for r in rows}), **{"model-index": [
        {"name": model_name, "results": [
            {"task": {"type": "sentence-similarity" if r["metric"] == "spearman" else "text-retrieval"},
             "dataset": {"name": r["set"], "type": r["set"]},
             "metrics": [{"type": r["metric"], "value": r["fine_tuned"], "name": f"{r['metric']} (base {r['base']})"}]}
            for r in rows]}]})


def add_eval_results(store_uri: str, model_path: str, rows: list[dict]) -> None:
    store = Store(store_uri)
    path = f"{model_path}/README.md"
    if rows and store.exists(path):
        name = model_path.rstrip("/").rsplit("/", 2)[-2]
        store.write_bytes(path, with_eval_results(store.read_bytes(path).decode(), rows, name).encode())


def schedule_line(cfg: TrainConfig) -> str:
    warmup = f"{cfg.warmup_ratio:.0%} of steps warmup, then " if cfg.warmup_ratio else ""
    clip = f"gradient norm clipped at {cfg.max_grad_norm}" if cfg.max_grad_norm else "no gradient clipping"
    return f"{warmup}{cfg.lr_schedule}; {clip}"


def train_on_dataset(store_uri: str, dataset_path: str, cfg: TrainConfig, run_token: str,
                     progress=None) -> dict:
    """Fine-tune `cfg.base_model` on a published dataset; reuse the result if already trained."""
    store = Store(store_uri)
    card = store.read_json(f"{dataset_path}/card.json")
    fp = train_fingerprint(card, cfg)
    out = store.path("models", card["name"], f"{card['version']}-{fp[:10]}")
    report_path = f"{out}/train_report.json"
    if store.exists(report_path) and (done := store.read_json(report_path))["fingerprint"] == fp:
        return done
    rows = read_dataset(store, dataset_path).to_pylist()
    labels, published = None, len(rows)
    if cfg.distils:
        labels, rows = pseudo_labels(store, card, rows, cfg)
    saved = checkpoints.StoreCheckpoints(store, f"{out}/checkpoint.tar")
    with tempfile.TemporaryDirectory() as tmp:
        if cfg.processes > 1:  # DDP on this worker's devices
            report = launch.train_distributed(rows, cfg, tmp, {"store": store_uri, "path": saved.path},
                                              card=card_data(card, cfg), progress=progress)
        else:
            report = trainer.train_contrastive(rows, cfg, tmp, progress, saved, card=card_data(card, cfg))
        report["skipped_rows"] = published - report["rows"]
        readme = Path(tmp) / "README.md"
        readme.write_text(with_section(readme.read_text() if readme.exists() else "", model_card(card, cfg, report)))
        store.upload_dir(tmp, f"{out}/model")
    report["plot"] = f"{out}/loss.png"
    store.write_bytes(report["plot"], plots.loss_curve(report["losses"], f"training loss: {card['name']}/{card['version']}"))
    report.update(fingerprint=fp, run_token=run_token, model_path=f"{out}/model", labels=labels,
                  dataset={"path": dataset_path, "sha256": card["sha256"]}, config=cfg.model_dump())
    store.write_json(report_path, report)  # written last: the job's commit
    saved.clear()
    return report


def pseudo_labels(store: Store, card: dict, rows: list[dict], cfg: TrainConfig) -> tuple[str, list[dict]]:
    """MarginMSE's training set: the published rows that have a hard negative, each with the teacher's
    `teacher_scores` (positive, then each hard negative), stored under `labels/` once per (dataset,
    teacher, negatives per row, teacher and trainer code), so retraining with other settings does not score again
    and the scores can be inspected beside the data. Returns the labels' path and rows."""
    key = stable_hash(card["sha256"], cfg.teacher_model, cfg.mined_negatives, code_version(teacher, trainer))
    path = store.path("labels", card["name"], f"{card['version']}-{key[:10]}.parquet")
    if store.exists(path):
        return path, store.read_table(path).to_pylist()
    labelled = trainer.with_teacher_scores(cfg, pick_device(cfg.device), rows)
    store.write_table(path, pa.Table.from_pylist(labelled))
    return path, labelled
