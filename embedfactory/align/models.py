"""Causal LMs for alignment: loading (hub id, folder, or the embedded GGUF) and saving merged."""
from __future__ import annotations

from pathlib import Path

import torch

from .config import EMBEDDED_LM


def load_causal_lm(name: str, device: str = "cpu"):
    """(model, tokenizer) in fp32; the embedded GGUF is dequantized by transformers (needs `gguf`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {}
    if name.startswith("embedded:"):
        from ..models import embedded_gguf, local_gguf

        gguf = local_gguf() if name == EMBEDDED_LM else embedded_gguf(name.split(":", 1)[1])
        name, kwargs = str(gguf.parent), {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, **kwargs).to(device)
    if kwargs:  # dequantized to plain fp32 tensors: drop the GGUF marks that forbid training and saving
        model.hf_quantizer, model.is_quantized = None, False
        model.config.__dict__.pop("quantization_config", None)
    return model, tokenizer


def save_merged(model, tokenizer, folder: str | Path) -> None:
    """A plain transformers folder (LoRA folded in) that `vllm serve <folder>` loads."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
