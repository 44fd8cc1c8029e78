"""Strict dataclass configs: build from dicts/YAML, reject unknown keys and wrong types.

Why: a misspelled YAML key that is silently ignored (FuxiCTR's ``**params``) wastes a
training run. Every error names the source file and the dotted key path.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from ctrzip.errors import UserError

C = TypeVar("C")


class ConfigError(UserError):
    """A config value or key is invalid; the message names the source and key path."""


def _where(source: str | None, path: str) -> str:
    return f"{source}: {path}" if source else path


def _convert(value: Any, tp: Any, source: str | None, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, source, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[-1] if errors else f"{_where(source, path)}: invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{_where(source, path)} must be one of {list(allowed)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(source, path)} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, source=source, path=path)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(source, path)} must be a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{_where(source, path)} must have {len(args)} items, got {len(value)}")
            items = [
                _convert(v, a, source, f"{path}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(v, item_tp, source, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(source, path)} must be a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {
            _convert(k, kt, source, f"{path}.{k}"): _convert(v, vt, source, f"{path}.{k}")
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_where(source, path)} must be true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{_where(source, path)} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{_where(source, path)} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{_where(source, path)} must be a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{_where(source, path)} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[C], data: dict[str, Any], *, source: str | None = None, path: str = "") -> C:
    """Build dataclass ``cls`` from ``data``, strictly (unknown keys and bad types raise)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(source, path or cls.__name__)} must be a mapping")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{_where(source, key_path)} is not a field of {cls.__name__}{hint}")
        kwargs[key] = _convert(value, hints[key], source, key_path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{_where(source, path or cls.__name__)}: {err}") from None


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain JSON/YAML-able dict (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if data is None:
        raise ConfigError(f"{path}: file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def track_set_fields(cls: type[C]) -> type[C]:
    """Class decorator (above ``@dataclass``): remember which fields the caller passed.

    Why: a config nested in a preset (``PQConfig``'s code learning, MEC's ``retrain`` stage)
    must change only the fields the user set; ``fields_set`` tells which they were (pydantic's
    ``model_fields_set``). ``dataclasses.replace`` passes every field, so its result counts as
    fully set, which keeps :func:`overlay` idempotent.
    """
    init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_fields_set", frozenset(names[: len(args)]) | frozenset(kwargs))
        init(self, *args, **kwargs)

    __init__.__doc__, __init__.__wrapped__ = init.__doc__, init  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


def fields_set(obj: Any) -> frozenset[str]:
    """Fields the caller passed to a ``track_set_fields`` dataclass (every field otherwise)."""
    every = frozenset(f.name for f in dataclasses.fields(obj) if f.init)
    return getattr(obj, "_fields_set", every)


def overlay(preset: C, given: C) -> C:
    """``preset`` with the fields the caller set on ``given`` (see ``track_set_fields``)."""
    return dataclasses.replace(preset, **{n: getattr(given, n) for n in fields_set(given)})  # type: ignore[type-var]
