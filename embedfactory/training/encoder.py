"""The student and guide models: loading, pooling, LoRA, and length-bucketed encoding.

Pooling `model` keeps what the checkpoint declares; `mean`, `cls` or `last` (the last real token:
what decoder models such as Qwen2 are pooled with) replace it. LoRA (peft) wraps the transformer and
is merged back before saving, so the output is a plain sentence-transformers folder.

Texts are encoded in chunks of similar length: each chunk pads only to its own longest text, which
on a mix of short queries and long documents saves most of the padded compute.

Prompts: `Encoder` gives a text of role 'query' or 'document' the model's prompt of that name (its
`prompts`, as sentence-transformers' `encode_query` / `encode_document` do); MiniLM's are empty. The
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
                     "document": own.get("document", "")}  # the prompts training applies (`Encoder`)
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
    if cfg.gradient_checkpointing:
        model[0].auto_model.gradient_checkpointing_enable()
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


class Encoder:
    """Encodes texts with `model` in length-sorted chunks of `chunk` texts, under bf16 autocast when
    asked; embeddings come back in fp32 and in the order given. `role` 'query' or 'document' applies the
    model's prompt of that name (see the module docstring); None: bare."""

    def __init__(self, model, chunk: int, bf16: bool = False):
        self.model, self.chunk, self.bf16 = model, chunk, bf16

    def chunks(self, texts: list[str]) -> list[list[int]]:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        return [order[s:s + self.chunk] for s in range(0, len(order), self.chunk)]

    def forward(self, texts: list[str], role: str | None = None) -> torch.Tensor:
        prompt = (getattr(self.model, "prompts", None) or {}).get(role) if role else None
        features = self.model.preprocess(texts, prompt=prompt or None)
        features = {k: v.to(self.model.device) if torch.is_tensor(v) else v for k, v in features.items()}
        with torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model(features)["sentence_embedding"].float()

    def __call__(self, texts: list[str], role: str | None = None) -> torch.Tensor:
        plan = self.chunks(texts)
        return in_order([self.forward([texts[i] for i in idx], role) for idx in plan], plan)


def guide_lookup(guide, queries: list[str], documents: list[str], chunk: int, bf16: bool = False):
    """A guide's embeddings of each distinct query (with its query prompt) and document (with its document
    prompt), computed once; a lookup `(texts, role) -> rows`, role 'query' or 'document'."""
    encoder, tables = Encoder(guide, chunk, bf16), {}
    with torch.no_grad():
        for role, texts in (("query", queries), ("document", documents)):
            unique = list(dict.fromkeys(texts))
            tables[role] = (encoder(unique, role), {t: i for i, t in enumerate(unique)})

    def lookup(texts: list[str], role: str) -> torch.Tensor:
        table, index = tables[role]
        return table[[index[t] for t in texts]] if texts else torch.empty(0)
    return lookup


def in_order(parts: list[torch.Tensor], plan: list[list[int]]) -> torch.Tensor:
    """Chunk outputs (in `plan`'s order) put back in the original order of the texts."""
    if not parts:
        return torch.empty(0)
    order = torch.tensor([i for idx in plan for i in idx], device=parts[0].device)
    return torch.cat(parts)[torch.argsort(order)]
