"""SFT and DPO with trl, LoRA (peft) by default, on CPU or GPU; each returns the trained model and a
report of its per-step logs and of how many trainable tensors moved."""
from __future__ import annotations

import torch

from .config import Finetune


def _args(cfg: Finetune, out_dir: str, device: str) -> dict:
    gpu = device.startswith("cuda")
    return dict(output_dir=out_dir, max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
                learning_rate=cfg.learning_rate, lr_scheduler_type="constant", warmup_steps=0, logging_steps=1,
                save_strategy="no", report_to=[], use_cpu=not gpu, bf16=gpu, seed=0, max_length=cfg.max_length,
                gradient_checkpointing=gpu, disable_tqdm=True)


def _lora(cfg: Finetune):
    if cfg.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules or "all-linear", task_type="CAUSAL_LM")


def _run(trainer) -> dict:
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    moved = sum(not torch.equal(p.detach(), trainable[n]) for n, p in trainer.model.named_parameters() if n in trainable)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    keys = ["loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected"]
    return {"steps": trainer.state.global_step, "trainable_tensors": len(trainable), "moved_tensors": moved,
            "log": [{k: round(float(h[k]), 5) for k in keys if k in h} for h in logs]}


def sft(model, tokenizer, rows: list[dict], cfg: Finetune, out_dir: str, device: str = "cpu"):
    """rows: prompt (messages) and completion (the assistant message); loss on the completion only."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    trainer = SFTTrainer(model=model, args=SFTConfig(**_args(cfg, out_dir, device)), processing_class=tokenizer,
                         train_dataset=Dataset.from_list(rows), peft_config=_lora(cfg))
    kept = len(trainer.train_dataset)  # trl drops the rows whose prompt fills max_length: no completion left
    if not kept:
        raise ValueError(f"all {len(rows)} SFT rows have a prompt of max_length {cfg.max_length} tokens or more, so "
                         "truncation leaves no completion token to learn: raise the role's max_length")
    return trainer.model, {**_run(trainer), "rows_truncated_away": len(rows) - kept}


def dpo(model, tokenizer, rows: list[dict], cfg: Finetune, beta: float, out_dir: str, device: str = "cpu"):
    """rows: prompt, chosen, rejected. The reference is `model` as given (with LoRA: the adapters
    switched off, so no second copy is held)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    trainer = DPOTrainer(model=model, args=DPOConfig(**_args(cfg, out_dir, device), beta=beta),
                         processing_class=tokenizer, train_dataset=Dataset.from_list(rows), peft_config=_lora(cfg))
    return trainer.model, _run(trainer)
