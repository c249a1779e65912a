"""One configuration format for every flow: a YAML file of the flow's parameters, with the same keys
as its deployment's `parameters:` in deployments/prefect.yaml, then command-line overrides.

    python -m flows.synth --config run.yaml --set params.synth.personas=8

Every key is checked against the flow's signature and the pydantic models under it before anything
runs; an unknown key fails with the valid keys at that level listed."""
from __future__ import annotations

import datetime
import inspect
import os
import re
import types
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, TypeAdapter


class ConfigError(ValueError):
    """A configuration file or override that does not fit the flow's parameters."""


def read(path: str | Path | None) -> dict:
    """The mapping in a YAML file (empty for no file)."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path}{_where(exc)}: not valid YAML: {_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a mapping of parameter names, not {type(data).__name__}")
    return _expanded(data, "", f"config {path}")


def _where(exc: yaml.YAMLError) -> str:
    """`:line:column` (1-based) of a YAML error, where YAML knows it."""
    mark = getattr(exc, "problem_mark", None)
    return f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""


def _problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: its problem and what it was parsing (YAML's own text spans several lines,
    with the source quoted)."""
    problem, context = getattr(exc, "problem", None), getattr(exc, "context", None)
    if not problem:
        return " ".join(str(exc).split())
    return f"{problem} ({context})" if context else problem


def override(config: dict, assignments: list[str]) -> dict:
    """`config` with each `dotted.key=value` set (the value read as YAML: 8, true, null, [a, b])."""
    out = _copy(config)
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE (dotted keys for nested ones), not {item!r}")
        put(out, key.strip(), _value(text))
    return out


def _value(text: str):
    """A --set value read as YAML, except where YAML would turn a plain word into something else
    (2026-11-22 a date, no a boolean): those stay text."""
    if not text.strip():
        return None
    value = yaml.safe_load(text)
    if isinstance(value, (datetime.date, datetime.datetime)) or (
            isinstance(value, bool) and text.strip().lower() not in ("true", "false")):
        return text
    return value


TEMPLATE = re.compile(r"\{\{\s*\$(\w+)\s*\}\}")  # Prefect's deployment templates: {{ $EMBEDFACTORY_STORE }}


def _expanded(value, path: str, where: str):
    """`{{ $VAR }}` templates in a deployment's parameters, filled from the environment as Prefect does."""
    if isinstance(value, dict):
        return {k: _expanded(v, f"{path}{k}.", where) for k, v in value.items()}
    if isinstance(value, list):
        return [_expanded(v, path, where) for v in value]
    if isinstance(value, str):
        missing = [name for name in TEMPLATE.findall(value) if name not in os.environ]
        if missing:
            raise ConfigError(f"{where}: {path[:-1]} uses ${missing[0]}, which is not set in the environment")
        return TEMPLATE.sub(lambda m: os.environ[m[1]], value)
    return value


def put(config: dict, key: str, value) -> None:
    """Set `config[a][b][c] = value` for key 'a.b.c', making the mappings on the way."""
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
        if node.get(name) is None:
            node[name] = {}
        if not isinstance(node[name], dict):
            raise ConfigError(f"{key}: {name} is {node[name]!r}, not a mapping")
        node = node[name]
    node[leaf] = value


def flow_arguments(fn, config: dict, source: str = "config") -> dict:
    """The keyword arguments for flow function `fn` (or a Prefect flow) from `config`: unknown keys
    rejected with the valid ones listed, then each value validated against its annotation (pydantic
    models built, so a bad value fails here with its field named)."""
    fn = getattr(fn, "fn", fn)  # a Prefect Flow wraps the function
    hints = typing.get_type_hints(fn)
    parameters = inspect.signature(fn).parameters
    check_keys(config, {n: hints.get(n) for n in parameters}, source)
    out = {}
    for name, value in config.items():
        try:  # as Prefect validates a deployment's parameters: a partial mapping gets each model's defaults
            out[name] = TypeAdapter(hints[name]).validate_python(value) if name in hints else value
        except ValueError as exc:
            raise ConfigError(f"{source}: invalid {name}:\n{exc}") from None
    return out


def check_keys(config: dict, fields: dict[str, typing.Any], source: str, path: str = "") -> None:
    """Raise for the first key of `config` (recursively, through pydantic models) not in `fields`."""
    for key, value in config.items():
        if key not in fields:
            raise ConfigError(f"{source}: unknown key {path + key!r}; valid keys{' of ' + path[:-1] if path else ''}: "
                              f"{', '.join(fields)}")
        model = _model_of(fields[key])
        if model is not None and isinstance(value, dict):
            check_keys(value, {n: f.annotation for n, f in model.model_fields.items()}, source, f"{path}{key}.")


def _model_of(annotation) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (`Model`, `Model | None`), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [m for a in typing.get_args(annotation) if (m := _model_of(a)) is not None]
        return models[0] if len(models) == 1 else None
    return None


def from_cli(fn, args, flags: dict) -> dict:
    """A flow's keyword arguments from parsed `args` (its `--config`, `--set`): the file, then each
    flag given (`flags`: dotted key -> value, None for not given), then the `--set` overrides."""
    config = read(args.config)
    for key, value in flags.items():
        if value is not None:
            put(config, key, value)
    return flow_arguments(fn, override(config, args.set), args.config or "command line")


def _copy(value):
    return {k: _copy(v) for k, v in value.items()} if isinstance(value, dict) else value


def field_help(model: type[BaseModel], dotted: str) -> str:
    """A command-line flag's help for the config field at `dotted` (e.g. "synth.personas") of `model`:
    the field's own description and default, so the two are written once, in the config model."""
    *path, name = dotted.split(".")
    for part in path:
        model = next(t for t in _candidates(model.model_fields[part].annotation)
                     if isinstance(t, type) and issubclass(t, BaseModel))
    field = model.model_fields[name]
    default = field.get_default(call_default_factory=True)
    if isinstance(default, dict):
        default = ",".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in default.items())
    return f"{field.description or ''} (default: {default})".strip().replace("%", "%%")


def parameter_help(fn, name: str, description: str) -> str:
    """A flag's help for flow parameter `name` of `fn` (a flow or function): `description` and the
    default the signature gives, so the default is written once, in the flow."""
    default = inspect.signature(getattr(fn, "fn", fn)).parameters[name].default
    if isinstance(default, (list, tuple)):
        default = ",".join(map(str, default))
    shown = "none" if default is None else default
    return f"{description} (default: {shown})".replace("%", "%%")


def _candidates(annotation) -> list:
    """The types an annotation allows (a union's members, or the type itself)."""
    return list(typing.get_args(annotation)) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else [annotation]


def add_arguments(cli) -> None:
    """The two options every flow's command line has."""
    cli.add_argument("--config", help="YAML file of the flow's parameters (the keys of its deployment's "
                     "`parameters:` in deployments/prefect.yaml)")
    cli.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one parameter, dotted for nested keys (repeatable)")


def parsed(parse: typing.Callable[[], typing.Any]):
    """What a flow's CLI `parse()` returns, or an exit listing every invalid key and value (pydantic's
    ValidationError is a ValueError) before anything starts."""
    try:
        return parse()
    except ValueError as exc:
        raise SystemExit(f"invalid parameters:\n{exc}") from None
