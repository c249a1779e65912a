"""Everything a synth run will need, checked before any model call, with every problem in one error:
the store, the sources, the evaluation sets, the embedding models it will load (filter, student,
guide, teacher), the keys of the endpoints that need one. Each problem names the parameter and the
fix; then each served endpoint: reachable, its key accepted, the model served (a fan-out run leaves that to
its workers, whose endpoints may be their own: llm/server.py checks each as it is opened)."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from ..config import EMBEDDED, Endpoint, SynthParams, TrainConfig
from ..models import EMBEDDED_LMS, EMBEDDED_MODELS, embedded_lm_problem, embedded_problem
from ..outcomes import ExpectedStop

# hosted APIs that always want a key (any other server says so with a 401 when it is opened)
KEYED_HOSTS = ("api.openai.com", "openai.azure.com", "api.anthropic.com", "api.together.xyz", "api.groq.com",
               "openrouter.ai", "api.mistral.ai", "api.deepseek.com", "generativelanguage.googleapis.com",
               "api.fireworks.ai")
HUB_TIMEOUT_S = 5.0


class PreflightError(ExpectedStop, ValueError):
    """One or more things a run needs are missing or wrong; the message lists every one."""


def model_problem(name: str | None, parameter: str) -> str | None:
    """Why `name` cannot be loaded as an embedding model, or None: an embedded name, a folder that
    holds one, or a Hub id that exists (looked up when the Hub answers within HUB_TIMEOUT_S; a Hub
    that cannot be reached is no proof of a typo)."""
    if not name:
        return None
    if name.startswith("embedded:"):
        if name not in EMBEDDED_MODELS:
            return f"{parameter}: {name!r} is not an embedded model; embedded: {', '.join(sorted(EMBEDDED_MODELS))}"
        return f"{parameter}: {name} {missing}" if (missing := embedded_problem(name)) else None
    path = Path(name).expanduser()
    if path.exists():
        return None if path.is_dir() else f"{parameter}: {name!r} is a file; give the model's folder"
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        return f"{parameter}: {name!r} is neither a folder that exists nor a Hub id (owner/name)"
    return _hub_problem(name, parameter)


def _hub_problem(name: str, parameter: str) -> str | None:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return None
    try:
        from huggingface_hub import model_info
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        model_info(name, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return None  # it exists; the token decides
    except RepositoryNotFoundError:
        return f"{parameter}: no model {name!r} on the Hub (a typo? a private model needs HF_TOKEN)"
    except Exception:  # no network, a timeout: cannot tell here
        return None
    return None


def key_problem(endpoint: Endpoint | None, parameter: str) -> str | None:
    """A hosted API (KEYED_HOSTS) whose key variable is unset."""
    if endpoint is None or endpoint.base_url == EMBEDDED or endpoint.api_key_secret:
        return None
    host = urlsplit(endpoint.base_url).hostname or ""
    if not any(host == h or host.endswith(f".{h}") for h in KEYED_HOSTS) or os.environ.get(endpoint.api_key_env):
        return None
    return (f"{parameter}: ${endpoint.api_key_env} is not set for {endpoint.base_url} (export it, or name a "
            f"Prefect Secret in {parameter}.api_key_secret)")


def _attempt(found: list[str], parameter: str, check) -> None:
    try:
        check()
    except Exception as exc:  # each check's own message says what is wrong
        found.append(f"{parameter}: {exc}")


def _eval_set_problems(names: list[str], parameter: str) -> list[str]:
    from ..eval import sets as evalsets
    from ..eval.heldout import resolve_eval_sets

    found: list[str] = []
    _attempt(found, parameter, lambda: [evalsets.check(e, verified=True) for e in resolve_eval_sets(names)])
    return found


def training_problems(train: TrainConfig, prefix: str = "train.") -> list[str]:
    """What a training run will load: its evaluation sets (first lines parsed) and its models."""
    found = _eval_set_problems(train.eval_sets, f"{prefix}eval_sets")
    names = [("base_model", train.base_model), ("guide_model", train.guide_model), ("teacher_model", train.teacher_model)]
    return found + [p for parameter, name in names if (p := model_problem(name, prefix + parameter))]


def eval_problems(store: str, models: dict[str, str], eval_sets: list[str]) -> list[str]:
    """Flow eval's inputs: each model (parameter -> name; a folder of the store counts) and the sets."""
    from ..store import Store

    found = _eval_set_problems(eval_sets, "eval_sets")
    for parameter, name in models.items():
        if not name.startswith(f"{Store(store).root}/") and (problem := model_problem(name, parameter)):
            found.append(problem)
    return found


def problems(params: SynthParams) -> list[str]:
    from ..store import Store
    from . import documents, duplicates, sources

    found: list[str] = []

    def attempt(parameter: str, check) -> None:
        _attempt(found, parameter, check)

    attempt("store", Store(params.store).check_writable)
    synth, filt, train = params.synth, params.filter, params.train
    if synth.persona_source:
        attempt("synth.persona_source", lambda: sources.load_personas(synth.persona_source))
    if synth.topic_source:
        attempt("synth.topic_source", lambda: sources.load_topics(synth.topic_source))
    if filt.external_corpus:
        attempt("filter.external_corpus", lambda: sources.load_column(filt.external_corpus, "text"))
    if filt.background_corpus:
        attempt("filter.background_corpus", lambda: sources.load_background(filt.background_corpus))
    if params.grounded.corpus:
        attempt("grounded.corpus", lambda: documents.load_documents(params.grounded.corpus))
    if filt.dedupe_against:
        attempt("filter.dedupe_against", lambda: duplicates.check_published(params))
    if (problem := model_problem(filt.model, "filter.model")):
        found.append(problem)
    if train is not None:
        found += training_problems(train)
    found += [p for role in ("generator", "revisor", "brainstormer")
              if (p := key_problem(getattr(params, role), role))]
    found += [p for role in ("generator", "revisor", "brainstormer")
              for p in embedded_problems(getattr(params, role), role)]
    return found


def embedded_problems(endpoint: Endpoint | None, role: str) -> list[str]:
    """An embedded server's model and draft model: known and installed (no GGUF is assembled here)."""
    if endpoint is None:
        return []
    if endpoint.base_url != EMBEDDED:
        return [f"{role}.draft_model: only the embedded server drafts; give {endpoint.base_url} its own "
                "speculative decoding (vLLM: --speculative-config)"] if endpoint.draft_model else []
    names = [("model", endpoint.model)] if not os.environ.get("EMBEDFACTORY_GGUF") else []
    names += [("draft_model", endpoint.draft_model)] if endpoint.draft_model else []
    return [f"{role}.{field}: {problem}" for field, name in names if (problem := embedded_lm_problem(name))]


def endpoints_of(params: SynthParams) -> dict[str, Endpoint | None]:
    """The servers a synth run will call, by role; none for a fan-out run, whose workers check their own as
    they open them (an endpoint on localhost is each GPU worker's)."""
    if params.fan_out:
        return {}
    return {"generator": params.generator, "revisor": params.revisor if params.synth.revise else None,
            "brainstormer": params.brainstormer}


def endpoint_problems(roles: dict[str, Endpoint | None]) -> list[str]:
    """Each server asked for its models (no completion): unreachable, a refused or missing key, a model it does
    not serve. The embedded server is started later, by the run."""
    from ..llm.client import check_reachable

    found, seen = [], set()
    for role, endpoint in roles.items():
        if endpoint is None or endpoint.base_url == EMBEDDED or key_problem(endpoint, role):
            continue  # the embedded server, or a key already reported missing
        if (endpoint.base_url, endpoint.model) in seen:
            continue
        seen.add((endpoint.base_url, endpoint.model))
        try:
            check_reachable(endpoint.base_url, endpoint, timeout_s=min(endpoint.timeout_s, 10.0))
        except (ConnectionError, PermissionError, ValueError) as exc:
            found.append(f"{role}: {exc}")
    return found


def check(params: SynthParams) -> None:
    """Every problem of `problems` and of the run's endpoints, in one error."""
    raise_if(problems(params) + endpoint_problems(endpoints_of(params)))


def causal_lm_problem(name: str, parameter: str) -> str | None:
    """Why `name` cannot be a generator's base model: the embedded GGUF, a folder, or a Hub id that exists."""
    if name.startswith("embedded:"):
        if name.split(":", 1)[1] not in EMBEDDED_LMS:
            return (f"{parameter}: {name!r} is not an embedded language model; embedded: "
                    + ", ".join(f"embedded:{lm}" for lm in EMBEDDED_LMS))
        return f"{parameter}: {problem}" if (problem := embedded_lm_problem(name.split(":", 1)[1])) else None
    return model_problem(name, parameter)


def align_problems(params) -> list[str]:
    """Flow align's: the store, the base model, the seed set's sources, the teacher's key and server."""
    from ..store import Store
    from . import sources

    found: list[str] = []
    _attempt(found, "store", Store(params.store).check_writable)
    if (problem := causal_lm_problem(params.base_model, "base_model")):
        found.append(problem)
    if params.seed_set.persona_source:
        _attempt(found, "seed_set.persona_source", lambda: sources.load_personas(params.seed_set.persona_source))
    if params.seed_set.topic_source:
        _attempt(found, "seed_set.topic_source", lambda: sources.load_topics(params.seed_set.topic_source))
    if (problem := key_problem(params.teacher, "teacher")):
        found.append(problem)
    return found + endpoint_problems({"teacher": params.teacher})


def raise_if(found: list[str]) -> None:
    if found:
        raise PreflightError(f"{len(found)} problem(s) before any model call:\n" + "\n".join(f"- {p}" for p in found))
