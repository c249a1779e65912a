"""Versioned prompt templates: one Jinja2 file per prompt, rendered in one place.

A prompt's version is a hash of its file, so editing a template changes the fingerprint of every
shard built with it (and only those): the next run regenerates exactly what the edit affects.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

import jinja2

_env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                          keep_trailing_newline=False, autoescape=False)


@lru_cache(maxsize=None)
def _source(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.j2").read_text(encoding="utf-8")


def version(name: str) -> str:
    return hashlib.sha256(_source(name).encode()).hexdigest()[:12]


@lru_cache(maxsize=None)
def _template(name: str) -> jinja2.Template:
    return _env.from_string(_source(name))


def render(name: str, **slots) -> str:
    return _template(name).render(**slots).strip()
