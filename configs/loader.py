"""Strict YAML → dataclass loading.

Every YAML key must name a dataclass field; an unknown or ill-typed key raises
ConfigError naming the key, the file and what is allowed. Layers apply in
order: dataclass defaults, configs/default.yaml, each overlay file, then
`section.key=value` overrides from the command line.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration file or override is wrong; the message says how to fix it."""


def _allowed(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _suggest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _convert(value: Any, hint: Any, where: str, source: str) -> Any:
    """Check `value` against the type `hint`, converting lists/dicts to tuples/dataclasses."""
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{where}' must be a mapping of {hint.__name__} fields "
                              f"({', '.join(_allowed(hint))}), got {value!r}")
        return _build(hint, value, source, where)
    if hint is Any:
        return value
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"{source}: '{where}' = {value!r} is not allowed; "
                              f"choose one of {', '.join(map(repr, choices))}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where, source)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{source}: '{where}' = {value!r} matches none of {hint}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{where}' must be a list, got {value!r}")
        args = get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{source}: '{where}' must have {len(args)} items, got {value!r}")
            return tuple(_convert(v, a, f"{where}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        return tuple(_convert(v, item, f"{where}[{i}]", source) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{where}' must be a mapping, got {value!r}")
        _, val_t = get_args(hint) or (Any, Any)
        return {str(k): _convert(v, val_t, f"{where}.{k}", source) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{where}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{where}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{where}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{source}: '{where}' must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls, data: dict, source: str, prefix: str = ""):
    hints = get_type_hints(cls)
    allowed = _allowed(cls)
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in allowed:
            raise ConfigError(f"{source}: unknown key '{where}'.{_suggest(str(key), allowed)} "
                              f"Allowed keys{' under ' + repr(prefix) if prefix else ''}: {', '.join(allowed)}")
        kwargs[key] = _convert(value, hints[key], where, source)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: invalid section '{prefix or cls.__name__}': {err}") from err
    return obj


def merge(base: dict, overlay: dict) -> dict:
    """Recursive dict merge: mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}. Pass an existing YAML file "
                          f"(see configs/ for examples).")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str) -> dict:
    """'detect.upsample=1' → {'detect': {'upsample': 1}} (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    dotted, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    node: dict = {}
    cursor = node
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return node


def load(cls, layers: list[tuple[str, dict]]):
    """Build `cls` from (source name, dict) layers, checking each layer on its own
    so an error names the file that introduced the bad key."""
    merged: dict = {}
    for source, data in layers:
        _build(cls, data, source)  # validate the layer alone: names the culprit file
        merged = merge(merged, data)
    return _build(cls, merged, "merged config")


def to_dict(obj) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def stable_hash(value: Any) -> str:
    """SHA-256 of a canonical JSON rendering (dataclasses, tuples and dicts alike)."""
    text = json.dumps(to_dict(value), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def dump_yaml(obj, path: Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))


typing  # keep import for forward refs in schemas
