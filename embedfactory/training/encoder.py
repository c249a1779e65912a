"""The student and guide models: loading, pooling, LoRA, saving.

Pooling `model` keeps what the checkpoint declares; `mean`, `cls` or `last` (the last real token:
what decoder models such as Qwen2 are pooled with) replace it. LoRA (peft) wraps the transformer and
is merged back before saving, so the output is a plain sentence-transformers folder.

Prompts: training gives anchors the model's 'query' prompt and documents its 'document' prompt (its
`prompts`, as sentence-transformers' `encode_query` / `encode_document` do; `data.RowCollator`);
MiniLM's are empty. The
student trains with its base model's document prompt and, under the bare '{query}' template, its query
prompt (EmbeddingGemma's 'task: search result | query: '); another `query_template` replaces the latter.
The saved model carries the prompts it was trained with. A guide embeds with its own prompts.
"""
from __future__ import annotations

import torch

from ..config import TrainConfig
from ..models import embedding_model_path

POOLING_MODES = {"mean": "mean", "cls": "cls", "last": "lasttoken"}


def pick_device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def load_student(cfg: TrainConfig, device: torch.device):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    model = SentenceTransformer(embedding_model_path(cfg.base_model), device=str(device))
    model.max_seq_length = cfg.max_seq_length
    own = model.prompts or {}
    model.prompts = {"query": own.get("query", "") if cfg.query_template == "{query}" else "",
                     "document": own.get("document", "")}  # the prompts training applies (`RowCollator`)
    model.default_prompt_name = None
    if cfg.pooling != "model":
        model[1] = Pooling(model.get_embedding_dimension(), pooling_mode=POOLING_MODES[cfg.pooling])
    dim = model.get_embedding_dimension()
    if any(d > dim for d in cfg.matryoshka_dims or ()):
        raise ValueError(f"matryoshka_dims {cfg.matryoshka_dims} exceed the model's {dim} dimensions")
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model[0].auto_model = get_peft_model(model[0].auto_model, LoraConfig(
            r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules or "all-linear"))
    return model


def load_guide(cfg: TrainConfig, device: torch.device):
    from sentence_transformers import SentenceTransformer

    if not cfg.guide_model:
        return None
    guide = SentenceTransformer(embedding_model_path(cfg.guide_model), device=str(device)).eval()
    guide.max_seq_length = cfg.max_seq_length
    return guide


def save_student(model, output_dir: str, query_prompt: str = "", base_model: str | None = None,
                 tags: tuple[str, ...] = ()) -> None:
    """Save a plain sentence-transformers folder whose prompts are the ones training used: the model's
    query prompt (`load_student`'s) then `query_prompt` for queries (`encode(q, prompt_name="query")` and
    `encode_query` apply it), its document prompt for documents (none unless the base model had one).
    Its README is sentence-transformers' own model card, written offline: `base_model` (a Hub id) and
    `tags` go into its YAML front matter."""
    if hasattr(model[0].auto_model, "merge_and_unload"):  # LoRA: fold the adapters into the weights
        model[0].auto_model = model[0].auto_model.merge_and_unload()
    trained = model.prompts or {}  # the base model's other prompts (tasks) no longer apply
    model.prompts = {"query": trained.get("query", "") + query_prompt, "document": trained.get("document", "")}
    model.default_prompt_name = None
    card = model.model_card_data
    card.local_files_only = True  # nothing is looked up on the Hub while saving
    if base_model:
        card.base_model = base_model
    card.add_tags(["embedfactory", *tags])
    model.save(output_dir)
