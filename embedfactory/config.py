"""Typed configuration, one object per concern.

The same objects are the flow parameters, so the Prefect UI form, the CLI and the tests share one
definition and one validation. Fields that only change how fast a run goes (concurrency, timeouts,
retries of transport errors) are marked ``runtime`` and never enter a cache key.
"""
from __future__ import annotations

from string import Formatter
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticUndefined

TaskType = Literal["retrieval", "classification", "short-short", "long-long", "sts", "bitext"]

GateName = Literal["echo", "copy", "length", "degenerate", "language", "label", "sts"]
GATE_NAMES: tuple[str, ...] = get_args(GateName)  # the quality gates (filter/gates.py), named once
EMBEDDED = "embedded"
# The embedded server's default model (models.EMBEDDED_LMS): bench/generation_throughput.py found the 0.5B
# faster in kept rows per minute, but its rows visibly worse (keyword queries, wrong labels, STS pairs
# that are no paraphrases); bench/RESULTS.md has the figures and rows.
EMBEDDED_GENERATOR = "qwen2.5-coder-1.5b-instruct"
EMBEDDED_EMBEDDER = "embedded:all-MiniLM-L6-v2"
EMBEDDED_TEACHER = "embedded:all-mpnet-base-v2"  # installed by `make setup`: a stronger bi-encoder (768 dims)
# EmbeddingGemma-300M (Gemma Terms of Use): assembled on first use from 25 registry package versions
# (models.py): a teacher that knows more than the student (its scores: bench/RESULTS.md)
EMBEDDED_GEMMA = "embedded:embeddinggemma-300m"
GEMMA_LICENCE = "Gemma Terms of Use (https://ai.google.dev/gemma/terms)"


def runtime(default=PydanticUndefined, **kwargs):
    """A field that does not change the data (speed, reporting): excluded from fingerprints."""
    return Field(default, json_schema_extra={"runtime": True}, **kwargs)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def fingerprint_fields(self) -> dict:
        """The fields that change what is produced (runtime knobs left out)."""
        out = {}
        for name, field in type(self).model_fields.items():
            extra = field.json_schema_extra or {}
            if isinstance(extra, dict) and extra.get("runtime"):
                continue
            value = getattr(self, name)
            out[name] = value.fingerprint_fields() if isinstance(value, Strict) else value
        return out


class Endpoint(Strict):
    """An OpenAI-compatible chat server: OpenAI, `vllm serve`, or the embedded llama.cpp server."""

    base_url: str = runtime(
        EMBEDDED,
        description="Base URL of an OpenAI-compatible API (e.g. http://gpu-1:8000/v1), "
        "or 'embedded' to start the shipped llama.cpp server on CPU with the embedded model `model`.",
    )
    model: str = Field(
        EMBEDDED_GENERATOR,
        description="Model name sent with each request; with the sampling settings it identifies the "
        "generator in cache keys (the URL serving it does not). With base_url 'embedded': one of "
        "models.EMBEDDED_LMS (qwen2.5-coder-1.5b-instruct, qwen2.5-coder-0.5b-instruct).",
    )
    draft_model: str | None = runtime(
        None, description="Embedded server only: an embedded model of the same tokenizer family that drafts "
        "tokens for speculative decoding (llama-server --model-draft), e.g. qwen2.5-coder-0.5b-instruct "
        "for the 1.5B; the larger model still decides every token. null: none.")
    api_key_env: str = runtime(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key (the key itself is never "
        "a parameter, so it never reaches Parquet, logs or the Prefect UI).",
    )
    api_key_secret: str | None = runtime(
        None, description="Name of a Prefect Secret block holding the API key; when set, the flow loads "
        "it into the environment variable `api_key_env` for its own process only.",
    )
    structured_output: Literal["json_schema", "json_object", "none"] = runtime(
        "json_schema",
        description="How the JSON schema is sent: the OpenAI/vLLM/llama-server 'json_schema' "
        "response_format, 'json_object' with the schema inline (llama-cpp-python), or 'none' (the reply "
        "is only validated). A server that refuses a mode gets the next one, counted in the report.",
    )
    max_concurrent: int | None = runtime(
        None, gt=0, description="At most this many requests in flight to this endpoint across every worker "
        "and flow run (a Prefect global concurrency limit, llm-<model>-<host>); null: none.")
    requests_per_minute: float | None = runtime(
        None, gt=0, description="At most this many requests started per minute across every worker (a Prefect "
        "rate limit, llm-<model>-<host>-rate); null: none. A 429's Retry-After is honoured either way.")
    concurrency: int = runtime(16, gt=0, description="Requests kept in flight per shard; for the "
                               "embedded server it defaults to `slots`.")
    slots: int = runtime(4, gt=0, le=64, description="Embedded server only: requests decoded together "
                         "(llama-server --parallel, continuous batching).")
    ctx_per_slot: int = runtime(4096, ge=512, description="Embedded server only: context tokens per slot "
                                "(prompt + reply, repairs included).")
    timeout_s: float = runtime(300.0, gt=0, description="Timeout of one request, seconds.")
    transport_retries: int = runtime(
        4, ge=0, description="Retries of HTTP errors, 429s and timeouts (with backoff)."
    )
    extra_sampling: dict[str, float] | None = Field(
        None, description="Server-specific sampling parameters sent as they are, beside temperature and "
        "top_p (e.g. llama.cpp's repeat_penalty, top_k, min_p; vLLM's repetition_penalty). null: none, "
        "except on the embedded server, which gets EMBEDDED_SAMPLING.",
    )

    def sampling_extra(self) -> dict[str, float]:
        """What is sent: `extra_sampling`, or for the embedded server the llama.cpp defaults below."""
        if self.extra_sampling is not None:
            return dict(self.extra_sampling)
        return dict(EMBEDDED_SAMPLING) if self.base_url == EMBEDDED else {}

    def fingerprint_fields(self) -> dict:
        return {**super().fingerprint_fields(), "extra_sampling": self.sampling_extra()}


# What llama-cpp-python's server applied by default (the previous embedded server), sent explicitly so
# that llama-server (whose repeat_penalty default is 1.0) samples the same way: the penalty on tokens
# just generated keeps a small model from copying one field into the next (S2 = S1, label = decoy).
EMBEDDED_SAMPLING = {"repeat_penalty": 1.1, "top_k": 40, "min_p": 0.05}
DEFAULT_MAX_TOKENS = 2048
# Faster settings for CPU runs (`synth.max_num_words`, `synth.sampling.max_tokens`) used by the tests.
EMBEDDED_MAX_WORDS = 100
EMBEDDED_MAX_TOKENS = 768
# The default cap on length asks, for the embedded CPU run: the 1.5B generator writes 15-65-word documents
# and 10-25-word classification texts whatever it is asked, so longer asks fail the length gate
# (bench/generation_throughput.py; figures in bench/RESULTS.md). Retrieval documents are asked "at
# least 30 words" (the cap itself: no recipe value is that small). GPU deployments set null: the recipe's.
CPU_MAX_WORDS = 30
SPEED_TASK_MIX = {"classification": 7, "sts": 7, "retrieval": 7, "short-short": 1, "long-long": 1}
# make run's mix: long-long kept 2 of 6 in a run capped at 50 (asked 300 words, written in 15-20),
# short-short 6 of 6; the four kept types in equal parts
CPU_TASK_MIX = {"classification": 7, "sts": 7, "retrieval": 7, "short-short": 7}


class Sampling(Strict):
    temperature: float = Field(1.0, ge=0, le=2, description="SPEED samples at 1.0.")
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(
        None, gt=0, description="Cap on generated tokens per call. null: 2048 (two 500-word documents fit).")

    def resolved(self) -> "Sampling":
        """The settings as sent (the token cap resolved)."""
        return self if self.max_tokens is not None else self.model_copy(update={"max_tokens": DEFAULT_MAX_TOKENS})


class Price(Strict):
    """What a model's tokens cost, for the run report (USD per million tokens)."""

    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)


class SynthConfig(Strict):
    """Sizes and knobs of the synthesis stages (personas → tasks → examples → revised)."""

    personas: int = Field(14, gt=0, description="Distinct personas to use (the defaults size a run for the "
                          "embedded CPU server: `make run`, about 170 examples; the GPU deployments set more).")
    persona_source: str | None = Field(
        None, description="null: the LLM expands the shipped seed personas; else a Parquet or JSON-lines "
        "file, a `datasets` folder or a Hugging Face dataset id with a `persona` column to sample from.",
    )
    topic_source: str | None = Field(
        "shipped", description="Category paths that condition the task brainstorm (SPEED): 'shipped' "
        "for the built-in taxonomy, a text file with one path per line, or null for no topics.",
    )
    tasks_per_topic: int = Field(1, gt=0, description="Tasks asked per brainstorm prompt, each prompt "
                                 "with its own topic (SPEED found 1 better than 3 or 5).")
    tasks_per_persona: int = Field(
        3, gt=0, description="Tasks per persona, spread over the task types by `task_mix`.")
    examples_per_task: int = Field(4, gt=0, description="Examples generated per task (each with its own "
                                   "attribute draw); more per task spends fewer brainstorm calls per example.")
    task_mix: dict[TaskType, float] = Field(
        default_factory=lambda: dict(CPU_TASK_MIX),
        description="Relative share of each task type among the brainstormed tasks. Default: the embedded "
        "CPU mix (no long-long, whose 300-word asks the small generators miss; short-short in their place); "
        "SPEED's is classification : STS : retrieval : matching = 7 : 7 : 7 : 2 (SPEED_TASK_MIX, as the GPU "
        "deployments set). Types left out get none.",
    )
    languages: list[str] = Field(
        default_factory=lambda: ["English"], min_length=1,
        description="Languages drawn (uniformly) for the `language` attribute; bitext draws its own pairs.",
    )
    personas_per_shard: int = Field(
        8, gt=0, description="Personas per shard of the tasks stage (later stages keep the shards)."
    )
    max_num_words: int | None = Field(
        CPU_MAX_WORDS, ge=10, description="Cap on the length asks (num_words): values above it are not "
        "drawn (the cap itself when no value is left). Default 30, sized for the embedded CPU run (`make run`); null: the reference values "
        "(documents of at least 50-500 words, long-long texts of at least 300), as the GPU deployments set.",
    )
    seed: int = Field(0, description="Seeds attribute draws and per-request sampling.")
    max_attempts: int = Field(
        3, gt=0, le=10, description="Attempts per prompt when the reply is not valid JSON for its "
        "schema; after the last one the row is kept as rejected with the reason.",
    )
    revise: bool = Field(False, description="Run the revisor (SPEED) over every generated example. Off in "
                         "the embedded CPU default (`make run`), where it doubles the generation time; the GPU "
                         "deployments turn it on.")
    sampling: Sampling = Sampling()

    @field_validator("task_mix")
    @classmethod
    def _some_weight(cls, mix: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in mix.values()) or not any(w > 0 for w in mix.values()):
            raise ValueError("task_mix needs non-negative weights, at least one of them positive")
        return {t: w for t, w in mix.items() if w > 0}


class GroundedConfig(Strict):
    """Grounded synthesis: queries written for passages of the user's corpus (synth/grounded.py)."""

    corpus: str | None = Field(
        None, description="The user's documents: JSON lines or Parquet with `id`, optional `title` and "
        "`text`; a BEIR folder; a Cranfield folder; a `datasets` folder or hub id. null: no grounded data.")
    documents: int | None = Field(None, gt=0, description="Documents sampled to write queries for (null: "
                                  "all); the whole corpus is still searched by the round-trip filter.")
    share: float = Field(1.0, gt=0, le=1, description="Share of grounded rows in the run: 1 skips the "
                         "brainstormed stages; below 1 the brainstormed examples (personas x tasks x "
                         "examples) make up the rest and the passage sample is cut to match.")
    queries_per_passage: int = Field(1, gt=0, le=8)
    passage_words: int = Field(200, ge=20, description="Longer documents are split into passages of at "
                               "most this many words.")
    passages_per_shard: int = Field(64, gt=0)
    instruction: str = Field("Given a question, retrieve passages that answer it",
                             min_length=3, description="The task instruction of every grounded row.")
    personas: bool = Field(False, description="Condition each query on a persona of the run.")


class FilterConfig(Strict):
    """KaLM ranking-consistency filter."""

    model: str = Field(
        EMBEDDED_EMBEDDER,
        description="Embedding model: 'embedded:all-MiniLM-L6-v2', a local sentence-transformers "
        "folder, or a Hugging Face model id.",
    )
    topk: int | None = Field(
        None, gt=0, description="Keep a sample only if its positive ranks within the top k of its "
        "pool for its query: the run's documents (positives and negatives) of the sample's task type, "
        "the external and grounded corpora, and background texts on small runs. Default: 0.5% of the "
        "pool, at least 3 and at most 50 (KaLM's value, reached at 10,000 documents).",
    )
    external_corpus: str | None = Field(
        None, description="Parquet or JSON-lines file with a `text` column: documents searched beside "
        "the run's own (a stricter filter, and more candidates for mining).",
    )
    background_corpus: str | None = Field(
        "shipped", description="Texts joined to a task type's pool when it holds fewer than "
        "`min_corpus` documents, so that top-k cannot keep everything by construction: 'shipped' "
        "(2,000 general-domain sentences, embedfactory/data/background.txt), a Parquet or JSON-lines "
        "file with a `text` column, or null (never).",
    )
    min_corpus: int = Field(1000, ge=0, description="Smallest pool a query is searched in: a task "
                            "type's own documents (plus the external corpus) below this size are "
                            "joined by background texts up to it.")
    mined_negatives: int = Field(7, ge=0, description="Hard negatives to mine per sample (0: none), "
                                 "beside the generated one.")
    mine_range: tuple[int, int] = Field((50, 100), description="Rank window [min, max) of the "
                                        "candidates (own positive and negative skipped); KaLM's 50-100.")
    mine_sampling: Literal["random", "top"] = Field(
        "random", description="'random': the negatives are a sample of the window, seeded by the query, "
        "stored hardest first (KaLM); 'top': the window's first (sentence-transformers' default).")
    mine_relative_margin: float = Field(
        0.05, ge=0, lt=1, description="Discard candidates scoring above (1 - margin) x the positive's "
        "score (NV-Retriever's TopK-PercPos with 95%); they are counted as likely false negatives.",
    )
    mine_absolute_margin: float | None = Field(
        None, description="Also discard candidates scoring above positive - margin.")
    near_duplicate_threshold: float = Field(
        0.8, gt=0, le=1, description="MinHash Jaccard estimate above which two examples (anchor and "
        "positive together) count as duplicates; exact copies after normalization always do.",
    )
    gates: list[GateName] = Field(
        default_factory=lambda: list(GATE_NAMES), description="Quality gates a row must pass (filter/gates.py); "
        "a row failing one is dropped with the reason 'gate <name>: ...', counted per gate.")
    dedupe_against: list[str] | None = Field(
        None, description="Published datasets whose rows the run's examples must not repeat: 'name' "
        "(every version published so far) or 'name/version'; null (default): the earlier versions of "
        "`dataset_name` (none on a new store); []: none. Only these enter the verdicts' fingerprint, so "
        "publishing another dataset leaves finished verdicts valid.")
    batch_size: int = runtime(64, gt=0, description="Texts per forward pass of the filter model.")
    device: Literal["auto", "cpu", "cuda"] = runtime(
        "auto", description="Where the filter model embeds and the search runs (auto: a GPU if visible).")

    @field_validator("dedupe_against")
    @classmethod
    def _dataset_refs(cls, refs: list[str] | None) -> list[str] | None:
        for ref in refs or []:
            name, _, version = ref.partition("/")
            if not name or "/" in version or ref.endswith("/"):
                raise ValueError(f"dedupe_against entry {ref!r}: give 'name' or 'name/version'")
        return refs

    @field_validator("mine_range")
    @classmethod
    def _window(cls, window: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= window[0] < window[1]:
            raise ValueError("mine_range must be [min, max) with 0 <= min < max")
        return window


class LoraSettings(Strict):
    """LoRA adapters (peft) on the transformer; merged into the weights when the model is saved."""

    rank: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="Module names; null: every linear layer.")


GIST_TEMPERATURE = 0.01  # GISTEmbed (arXiv 2402.16829) and sentence-transformers' GISTEmbedLoss
INFONCE_TEMPERATURE = 0.05  # sentence-transformers' MultipleNegativesRankingLoss (scale 20); KaLM: 0.01


class TrainConfig(Strict):
    """Contrastive fine-tuning with in-batch negatives (plus the generated hard negative), or
    distillation of a teacher's scores (MarginMSE, listwise KL).

    The loss: 'infonce' (default), 'gist' (needs `guide_model`; a `guide_model` with the loss left
    at 'infonce' selects it, as before the field existed), or one that distils `teacher_model`
    ('margin_mse', 'margin_mse_infonce', 'kl_infonce')."""

    base_model: str = Field(EMBEDDED_EMBEDDER, description="Model to fine-tune (same forms as the filter model).")
    epochs: int = Field(1, gt=0, description="Passes over the published rows.")
    batch_size: int = Field(16, gt=1)
    learning_rate: float = Field(2e-5, gt=0)
    temperature: float | None = Field(
        None, gt=0, description="Softmax temperature. null: GIST_TEMPERATURE (0.01, GISTEmbed's and "
        "sentence-transformers' GISTEmbedLoss) for 'gist', INFONCE_TEMPERATURE for 'infonce'.")
    # warm-up, linear decay and clipping at 1.0 (sentence-transformers' defaults) beat a constant
    # LR without them by about half a point on Cranfield (issue 31's diagnosis)
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="Share of the steps over which the learning rate rises linearly "
        "from 0 (GISTEmbed and E5 warm up; 0: no warmup).")
    lr_schedule: Literal["constant", "linear"] = Field(
        "linear", description="After warmup: 'constant', or 'linear' decay to 0 at the last step "
        "(transformers' and sentence-transformers' default).")
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Clip the gradients' global norm to this before each step "
        "(transformers' default: 1.0); null: no clipping.")
    max_seq_length: int = Field(256, gt=8)
    mined_negatives: int | None = Field(
        7, ge=0, description="Mined hard negatives used per row (beside the generated one), from the "
        "dataset's `mined_negatives` column (the filter mines up to 7, KaLM's number); null: all a row has.")
    loss: Literal["infonce", "gist", "margin_mse", "margin_mse_infonce", "kl_infonce"] = Field(
        "infonce", description="infonce: in-batch and hard negatives, equal texts masked; gist: "
        "GISTEmbed with `guide_model`; margin_mse: the teacher's (query, positive) - (query, hard "
        "negative) score margins distilled (GPL), rows without a hard negative skipped; "
        "margin_mse_infonce: InfoNCE plus MarginMSE on the same logit scale (margins / temperature); "
        "kl_infonce: InfoNCE plus the KL divergence of the student's softmax over each row's positive and "
        "hard negatives from the teacher's (listwise distillation, RocketQAv2), same temperature.",
    )
    guide_model: str | None = Field(
        None, description="GISTEmbed guide (same forms as base_model): in-batch candidates it scores "
        "above the true pair are masked. Setting it with `loss` left at 'infonce' selects 'gist'.",
    )
    teacher_model: str | None = Field(
        None, description="The teacher the distilling losses learn from: a sentence-transformers "
        "bi-encoder (same forms as base_model, e.g. 'embedded:all-mpnet-base-v2'; cosine) or a cross-encoder ('cross-encoder/...' "
        "hub id or a sequence-classification folder). Rows with a `teacher_scores` column skip it.",
    )
    gist_margin: float = Field(0.0, ge=0, lt=1, description="Margin of the guide's test.")
    gist_margin_strategy: Literal["absolute", "relative"] = "absolute"
    homogeneous_ratio: float | None = Field(
        None, gt=0, le=1, description="Semi-homogeneous batches (KaLM): this share of each batch from "
        "one group (`homogeneous_key`), the rest from others; null for plain shuffled batches.",
    )
    homogeneous_key: Literal["task_type", "instruction"] = Field(
        "task_type", description="What a semi-homogeneous group is: 'task_type' (retrieval, sts...; "
        "large enough to fill a batch's homogeneous part) or 'instruction' (one generated task, "
        "usually a handful of rows).")
    query_template: str = Field(
        "{query}",
        description="How an anchor is shown to the model; documents get no prefix. Placeholders "
        "{instruction} and {query} only, the template ending in {query}. The default shows the bare "
        "query, right for students not trained with instructions (all-MiniLM-L6-v2 scored lower on "
        "Cranfield with the E5 template: bench/RESULTS.md); instruction-tuned or "
        "decoder students take the E5 form 'Instruct: {instruction}\nQuery: {query}'.",
    )
    eval_instruction: str = Field(
        "Given a question, retrieve passages that answer it",
        description="The instruction the saved model's query prompt carries (the template up to "
        "{query}): what retrieval evaluation and users prefix queries with.",
    )
    pooling: Literal["model", "mean", "cls", "last"] = Field(
        "model", description="'model': the checkpoint's own pooling; 'last': the last real token "
        "(decoder models such as Qwen2).")
    matryoshka_dims: list[int] | None = Field(
        None, description="Also train these truncated widths (Matryoshka), e.g. [256, 128, 64]; the "
        "loss is the mean over the full width and these.")
    matryoshka_weights: list[float] | None = Field(
        None, description="The loss weight of the full width, then of each `matryoshka_dims` width "
        "(normalised to sum 1); null: equal weights.")
    lora: LoraSettings | None = Field(None, description="Train LoRA adapters instead of all weights.")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: forward passes under bf16 autocast (fp32 master weights); for GPUs.")
    seed: int = 0
    device: str = runtime("auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1'...")
    mini_batch_size: int = runtime(32, gt=0, description="Texts encoded per forward pass (length-sorted).")
    grad_cache: bool = runtime(
        False, description="Gradient caching: activations of one mini-batch at a time, so the batch "
        "size is not bounded by memory (same gradients, about 1/3 more compute).")
    gradient_checkpointing: bool = runtime(False, description="Recompute activations in backward.")
    checkpoint_every: int = runtime(50, gt=0, description="Steps between checkpoints in the store.")
    processes: int = runtime(
        1, gt=0, description="Training processes on the worker (DDP through torchrun): one per GPU on a "
        "machine with several; each takes batch_size / processes rows of every step's batch.")
    eval_sets: list[str] = runtime(
        ["cranfield", "stsb-test"], description="Evaluated after training, base vs fine-tuned: names "
        "of shipped sets or paths of EvalSet JSON files.")

    @field_validator("matryoshka_dims")
    @classmethod
    def _dims(cls, dims: list[int] | None) -> list[int] | None:
        if dims is not None and (not dims or min(dims) < 1 or len(set(dims)) != len(dims)):
            raise ValueError("matryoshka_dims must be distinct positive widths")
        return dims

    @model_validator(mode="after")
    def _processes(self) -> "TrainConfig":
        if self.batch_size % self.processes:
            raise ValueError(f"batch_size {self.batch_size} must divide among processes={self.processes}: "
                             "each process takes an equal share of every batch")
        return self

    @model_validator(mode="after")
    def _matryoshka_weights(self) -> "TrainConfig":
        weights = self.matryoshka_weights
        if weights is not None and (len(weights) != 1 + len(self.matryoshka_dims or []) or min(weights) <= 0):
            raise ValueError(f"matryoshka_weights needs one positive weight for the full width and one per "
                             f"matryoshka_dims width ({1 + len(self.matryoshka_dims or [])}), got {weights}")
        return self

    @field_validator("query_template")
    @classmethod
    def _template(cls, template: str) -> str:
        try:
            parts = list(Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"query_template {template!r} is not a format string: {exc}") from None
        fields = [(name, spec, conv) for _, name, spec, conv in parts if name is not None]
        other = sorted({"{" + name + "}" for name, _, _ in fields if name not in ("instruction", "query")})
        if other:
            raise ValueError(f"query_template {template!r} has placeholders {', '.join(other)}; "
                             "only {instruction} and {query} are filled")
        if any(spec or conv for _, spec, conv in fields):
            raise ValueError(f"query_template {template!r}: write placeholders plainly, without "
                             "format specs or conversions")
        if [name for name, _, _ in fields].count("query") != 1 or parts[-1][1] != "query":
            raise ValueError(f"query_template {template!r} must end with {{query}}, once: the text "
                             "before it becomes the saved model's query prompt")
        return template

    @model_validator(mode="before")
    @classmethod
    def _guide_implies_gist(cls, data):
        """A guide model means GISTEmbed, as before `loss` existed (also when a form sends the
        default 'infonce' beside it)."""
        if isinstance(data, dict) and data.get("guide_model") and data.get("loss", "infonce") == "infonce":
            return {**data, "loss": "gist"}
        return data

    @model_validator(mode="after")
    def _loss_models(self) -> "TrainConfig":
        if self.loss == "gist" and not self.guide_model:
            raise ValueError("loss 'gist' needs guide_model")
        if self.distils and self.guide_model:
            raise ValueError(f"guide_model is only used by loss 'gist', not {self.loss!r}")
        if self.distils and not self.teacher_model:
            raise ValueError(f"loss {self.loss!r} needs teacher_model")
        if not self.distils and self.teacher_model:
            raise ValueError("teacher_model is only used by the distilling losses (margin_mse, "
                             f"margin_mse_infonce, kl_infonce), not {self.loss!r}")
        return self

    @property
    def distils(self) -> bool:
        """Whether the loss learns a teacher's margins (the rows need `teacher_scores`)."""
        return self.loss in ("margin_mse", "margin_mse_infonce", "kl_infonce")

    def softmax_temperature(self) -> float:
        """The temperature the loss uses (see `temperature`)."""
        if self.temperature is not None:
            return self.temperature
        return GIST_TEMPERATURE if self.loss == "gist" else INFONCE_TEMPERATURE

    def query_prompt(self) -> str:
        """The query prefix the trained model expects: the template before {query}, with
        `eval_instruction` as the instruction (saved as the model's sentence-transformers prompt)."""
        return self.query_template.format(instruction=self.eval_instruction, query="")


class Spending(Strict):
    """What a flow's paid LLM calls may cost: the spending settings of `synth` and `align`, defined once."""

    prices: dict[str, Price] = runtime(
        default_factory=dict, description="Token prices by model name (USD per million tokens), over the "
        "shipped table of well-known models (llm/costs.py KNOWN_PRICES); unpriced models cost 0. The "
        "report costs the calls per stage.")
    budget_usd: float | None = runtime(
        None, gt=0, description="Stop the run cleanly once its LLM calls cost this much (no new shard or "
        "request starts; paid replies and committed shards are kept; a rerun with a higher budget resumes); "
        "flow `synth` warns before its first call when its projection is above. null: no budget.")


class SynthParams(Spending):
    """Everything a `synth` run needs; the flow's parameters."""

    store: str = Field("./data", description="Local folder or s3://bucket/prefix (endpoint and "
                       "credentials from AWS_* environment variables or `store_secret`).")
    store_secret: str | None = runtime(
        None, description="Prefect Secret block holding the S3 settings as JSON (aws_access_key_id, "
        "aws_secret_access_key, endpoint_url, region); null: the worker's environment.",
    )
    run_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Folder name under runs/; by default derived from the parameters, so the same "
        "parameters resume the same run.",
    )
    dataset_name: str = Field("synth", pattern=r"^[A-Za-z0-9_.-]+$")
    min_published_rows: int = Field(
        1, ge=1, description="Fewest kept rows a run publishes: below it publishing fails with the counts and "
        "`latest` keeps pointing at the previous dataset (the verdicts stay: a rerun with a lower value "
        "publishes them without a model call).")
    synth: SynthConfig = SynthConfig()
    grounded: GroundedConfig = GroundedConfig()
    generator: Endpoint = Endpoint()
    brainstormer: Endpoint | None = Field(
        None, description="Endpoint of the persona and task brainstorm (SPEED: the teacher, e.g. GPT-4o, "
        "a few calls per persona); the generator's when unset.")
    revisor: Endpoint | None = Field(None, description="Revisor endpoint; the generator's when unset.")
    filter: FilterConfig = FilterConfig()
    train: TrainConfig | None = Field(TrainConfig(), description="Fine-tune on the result; null to skip.")
    fan_out: str | None = runtime(
        None, description="Deployment that generates one shard on a GPU work pool, e.g. 'synth-shard/gpu': "
        "the persona brainstorm and each persona chunk's tasks -> examples -> revised then run as flow "
        "runs there (the generator URL is the GPU worker's own vLLM); null: in this flow run.",
    )
