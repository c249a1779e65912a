"""SFT and DPO steps (trl, LoRA) on a real small causal LM: the shipped Qwen2.5-Coder-0.5B-Instruct
GGUF, dequantized by transformers. A few steps on a fixed tiny set: the loss is finite and falls,
the trained tensors move, the exported model differs from the base, and DPO's reward margin grows."""
import copy
import math

import pytest
import torch

from embedfactory.align import models, trainers
from embedfactory.align.config import EMBEDDED_LM, Finetune

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "Write one JSON object with keys \"query\" and \"positive\" for a "
        "retrieval task about river floods."}]
GOOD = '{"query": "how do river floods form", "positive": "River floods form when rain exceeds what the channel carries."}'
BAD = "rivers rivers rivers floods floods"
CFG = Finetune(steps=6, batch_size=2, max_length=256, learning_rate=1e-3)


@pytest.fixture(scope="module")
def qwen():
    return models.load_causal_lm(EMBEDDED_LM)


def fresh(qwen):
    return copy.deepcopy(qwen[0]), qwen[1]


def test_sft_lowers_the_loss_and_changes_the_exported_weights(qwen, tmp_path):
    model, tokenizer = fresh(qwen)
    rows = [{"prompt": ASK, "completion": [{"role": "assistant", "content": GOOD}]},
            {"prompt": ASK[:1], "completion": [{"role": "assistant", "content": GOOD.replace("floods", "flooding")}]}]
    trained, report = trainers.sft(model, tokenizer, rows, CFG, str(tmp_path / "trainer"))
    losses = [h["loss"] for h in report["log"]]
    print(f"SFT loss per step: {losses}")  # pytest -s shows the curve
    assert report["steps"] == len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0], losses
    assert report["moved_tensors"] == report["trainable_tensors"] > 0  # every LoRA tensor trained

    models.save_merged(trained, tokenizer, tmp_path / "junior")
    exported, _ = models.load_causal_lm(str(tmp_path / "junior"))
    name = "model.layers.0.self_attn.q_proj.weight"
    before, after = dict(qwen[0].named_parameters())[name], dict(exported.named_parameters())[name]
    assert not torch.equal(before, after) and torch.isfinite(after).all()


def test_sft_rows_whose_prompt_fills_max_length_are_counted_and_none_left_is_a_clear_error(qwen, tmp_path):
    model, tokenizer = fresh(qwen)
    long_ask = [{"role": "user", "content": "Describe river floods. " * 40}]  # far over 64 tokens
    short = {"prompt": ASK, "completion": [{"role": "assistant", "content": GOOD}]}
    cfg = CFG.model_copy(update={"steps": 1, "max_length": 96})
    _, report = trainers.sft(model, tokenizer, [short, {**short, "prompt": long_ask}], cfg, str(tmp_path / "a"))
    assert report["rows_truncated_away"] == 1 and report["steps"] == 1
    with pytest.raises(ValueError, match="all 1 SFT rows have a prompt of max_length 96 tokens or more"):
        trainers.sft(model, tokenizer, [{**short, "prompt": long_ask}], cfg, str(tmp_path / "b"))


def test_dpo_grows_the_reward_margin_against_the_reference(qwen, tmp_path):
    model, tokenizer = fresh(qwen)
    rows = [{"prompt": ASK, "chosen": [{"role": "assistant", "content": GOOD}],
             "rejected": [{"role": "assistant", "content": BAD}]},
            {"prompt": ASK, "chosen": [{"role": "assistant", "content": GOOD.replace("form", "start")}],
             "rejected": [{"role": "assistant", "content": BAD.upper()}]}]
    _, report = trainers.dpo(model, tokenizer, rows, CFG.model_copy(update={"learning_rate": 5e-4}), 0.1,
                             str(tmp_path / "trainer"))
    log = report["log"]
    losses, margins = [h["loss"] for h in log], [h["rewards/margins"] for h in log]
    print(f"DPO loss per step: {losses}\nDPO reward margin per step: {margins}")
    assert len(log) == 6 and all(math.isfinite(x) for x in losses + margins)
    assert margins[0] == pytest.approx(0.0, abs=1e-3)  # step 1: the policy is the reference
    assert margins[-1] > margins[0] + 0.1 and losses[-1] < losses[0], log
    assert report["moved_tensors"] == report["trainable_tensors"] > 0
