"""Parameters of flow `align`."""
from __future__ import annotations

from pydantic import Field, field_validator

from ..config import Endpoint, LoraSettings, Spending, Strict, SynthConfig, runtime

EMBEDDED_LM = "embedded:qwen2.5-coder-0.5b-instruct"


class Finetune(Strict):
    """One trl run (SFT or DPO) with LoRA by default."""

    steps: int = Field(20, gt=0, description="Optimizer steps.")
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(2, gt=0)
    max_length: int = Field(1024, gt=0, description="Tokens per sequence (prompt + completion).")
    lora: LoraSettings | None = Field(LoraSettings(), description="null: full fine-tuning.")


SEED_SET = {"personas": 8, "tasks_per_persona": 1, "examples_per_task": 1, "task_mix": {"retrieval": 1, "classification": 1},
            "revise": False, "max_num_words": 50}
SENIOR = {"learning_rate": 5e-5}


class AlignParams(Spending):
    store: str = Field("./data", description="Local folder or s3://bucket/prefix.")
    run_id: str = Field("align", pattern=r"^[A-Za-z0-9_.-]+$", description="Folder under align/.")
    teacher: Endpoint = Field(Endpoint(), description="Any OpenAI-compatible endpoint (GPT-4 class in "
                              "SPEED; here the embedded default generator, the 1.5B, larger than the 0.5B base model).")
    base_model: str = Field(EMBEDDED_LM, description="Causal LM the junior and the revisor start from: "
                            "a hub id, a local folder, or the embedded GGUF (dequantized by transformers).")
    seed_set: SynthConfig = Field(
        SynthConfig(**SEED_SET),
        description="Sizes of the teacher's seed set (personas -> tasks -> examples, the synthesis prompts); "
        "keys not given keep these defaults.")
    candidates: int = Field(4, ge=2, le=16, description="Junior samples per prompt for the preference pairs.")
    held_out: float = Field(0.5, gt=0, lt=1, description="Share of the seed prompts kept out of the junior's "
                            "SFT: the junior samples its candidates (and the teacher judges its answers) on "
                            "these, prompts it has not memorised, so its samples differ and the preference "
                            "pairs teach something.")
    max_new_tokens: int = Field(256, gt=0, description="Cap on each junior sample.")
    junior: Finetune = Finetune()
    senior: Finetune = Field(Finetune(**SENIOR), description="DPO; keys not given keep these defaults.")
    beta: float = Field(0.1, gt=0, description="DPO beta (SPEED/trl default 0.1).")
    revisor: Finetune = Finetune()
    export_name: str = Field("aligned", pattern=r"^[A-Za-z0-9_.-]+$",
                             description="Registered as <name>-junior, <name>-senior, <name>-revisor.")
    gguf: str | None = Field(None, pattern=r"^(f32|f16|bf16|q8_0)$",
                             description="Also write each model as one GGUF file of this type (f16, bf16, "
                             "q8_0, f32) with llama.cpp's converter, for the embedded server "
                             "(EMBEDFACTORY_GGUF), llama-server or Ollama; null: transformers folders only.")
    planned_examples: int = Field(920_000, gt=0, description="Examples the senior is meant to generate; "
                                  "the report divides the teacher's calls by it (SPEED: 920K).")
    device: str = runtime("auto", description="auto, cpu, cuda, cuda:N")

    @field_validator("seed_set", mode="before")
    @classmethod
    def _seed_defaults(cls, value):
        """A partial seed set (a run config, a deployment parameter) keeps the other seed defaults."""
        return {**SEED_SET, **value} if isinstance(value, dict) else value

    @field_validator("senior", mode="before")
    @classmethod
    def _senior_defaults(cls, value):
        return {**SENIOR, **value} if isinstance(value, dict) else value
