"""The junior's candidates: several samples per prompt (SPEED samples at temperature 1.0).

Here with transformers' `generate`; on a GPU pool serve the junior with `vllm serve <folder>` and
sample through the same OpenAI client the synthesis stages use."""
from __future__ import annotations

import torch


@torch.no_grad()
def sample_candidates(model, tokenizer, rows: list[dict], k: int, max_new_tokens: int, seed: int) -> list[dict]:
    model.eval()
    out = []
    for i, row in enumerate(rows):
        torch.manual_seed(seed + i)
        inputs = tokenizer.apply_chat_template(row["messages"], add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True).to(model.device)
        generated = model.generate(**inputs, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens,
                                   num_return_sequences=k, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        out.append({**row, "candidates": [t.strip() for t in texts]})
    return out
