"""Versioned prompt templates: one Jinja2 file per prompt, rendered in one place.

A prompt's version is a hash of its file, so editing a template changes the fingerprint of every
shard built with it (and only those): the next run regenerates exactly what the edit affects.

A template with `{% block system %}` and `{% block user %}` becomes two chat messages: the system
block holds no variables, so every prompt of that kind starts with the same tokens and a server with
prefix caching (llama-server's slots, vLLM's automatic prefix caching) computes them once; what
varies (task, attributes, example) comes last, in the user block.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

import jinja2

_env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                          keep_trailing_newline=False, autoescape=False)


@lru_cache(maxsize=None)
def source(name: str) -> str:
    """A shipped template's text."""
    return resources.files(__package__).joinpath(f"{name}.j2").read_text(encoding="utf-8")


def version(name: str) -> str:
    return hashlib.sha256(source(name).encode()).hexdigest()[:12]


def compile_source(text: str) -> jinja2.Template:
    """A template from its text (a prompt being tried out before it ships), rendered like the shipped ones."""
    return _env.from_string(text)


@lru_cache(maxsize=None)
def _template(name: str) -> jinja2.Template:
    return compile_source(source(name))


def _of(prompt: str | jinja2.Template) -> jinja2.Template:
    return prompt if isinstance(prompt, jinja2.Template) else _template(prompt)


def render(name: str, **slots) -> str:
    return _template(name).render(**slots).strip()


def messages(prompt: str | jinja2.Template, **slots) -> list[dict]:
    """The chat messages of a prompt (a shipped name or a compiled template): [system, user] for a
    template with those blocks, else [user]."""
    template = _of(prompt)
    if "system" not in template.blocks:
        return [{"role": "user", "content": template.render(**slots).strip()}]
    context = template.new_context(slots)
    return [{"role": role, "content": "".join(template.blocks[role](context)).strip()}
            for role in ("system", "user")]


def fixed_part(prompt: str | jinja2.Template) -> str:
    """The system block of a template as rendered (it holds no variables), or "" if it has none."""
    template = _of(prompt)
    if "system" not in template.blocks:
        return ""
    return "".join(template.blocks["system"](template.new_context({}))).strip()
