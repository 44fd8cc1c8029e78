"""Strict dataclass configs: build from dicts/YAML, reject unknown keys and wrong types.

Why: a misspelled YAML key that is silently ignored (FuxiCTR's ``**params``) wastes a
training run. Every error names the source file and the dotted key path.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
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


def _convert(value: Any, tp: Any, source: str | None, path: str, base: Any = None) -> Any:
    """Check/convert ``value`` to type ``tp``; ``base`` is the current value a nested mapping
    is merged onto (so ``{steps: 100}`` changes only ``steps`` of a preset)."""
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
                return _convert(value, arg, source, path, base)
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
        return from_dict(tp, value, source=source, path=path, base=base if isinstance(base, tp) else None)
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


def from_dict(
    cls: type[C], data: dict[str, Any], *, source: str | None = None, path: str = "", base: C | None = None
) -> C:
    """Build dataclass ``cls`` from ``data``, strictly (unknown keys and bad types raise ``ConfigError``).

    Keys absent from ``data`` keep their value in ``base`` (default: the field defaults). With a
    ``base``, a nested dataclass given as a mapping is merged onto ``base``'s value the same way,
    so a preset stays what it is except for the keys the user names. Without one, nested configs
    are built from the keys given; configs with presets (``MECConfig``) keep their preset's
    other fields through ``track_set_fields`` / ``overlay``.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(source, path or cls.__name__)} must be a mapping")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; its fields: {', '.join(fields)}"
            raise ConfigError(f"{_where(source, key_path)} is not a field of {cls.__name__}{hint}")
        # merged onto an explicit base only: a field's own default may hold values its
        # __post_init__ filled for another setting (a preset is kept by ``overlay`` instead)
        current = _current(fields[key], base) if isinstance(value, dict) and base is not None else None
        kwargs[key] = _convert(value, hints[key], source, key_path, current)
    if base is None:  # name a missing required key rather than Python's __init__ TypeError
        no_default = dataclasses.MISSING
        required = [
            n for n, f in fields.items() if f.default is no_default and f.default_factory is no_default
        ]
        required = [n for n in required if n not in kwargs]
        if required:
            where = _where(source, f"{path}.{required[0]}" if path else required[0])
            raise ConfigError(f"{where} is required ({cls.__name__}); add it")
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)  # type: ignore[type-var]
    except (TypeError, ValueError) as err:  # __post_init__ checks (ConfigError included): add where
        raise ConfigError(f"{_where(source, path or cls.__name__)}: {err}") from None


def _current(f: dataclasses.Field[Any], base: Any) -> Any:
    """The value a mapping for field ``f`` is merged onto: ``base``'s value or the field default."""
    if base is not None:
        return getattr(base, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


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


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` with YAML 1.2 core-schema scalars: ``1e-4``, ``1E5`` and ``.5`` are floats,
    ``true``/``false`` the only booleans; YAML 1.1's ``yes``/``no``/``on``/``off`` booleans,
    sexagesimal ``1:30`` numbers and dates stay strings. (PyYAML implements YAML 1.1, where
    ``1e-4`` is a string: a learning rate written that way would be refused.)"""

    yaml_implicit_resolvers: typing.ClassVar[dict[Any, Any]] = {}


for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("merge", r"^(?:<<)$", "<"),
):
    _Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))


def parse_yaml(text: str, source: str | Path | None = None) -> Any:
    """Parse YAML text safely (no objects), with YAML 1.2 floats; errors name ``source``."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506  (_Loader is a SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source or '<yaml>'}: invalid YAML: {err}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely (``parse_yaml``); errors name the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    data = parse_yaml(path.read_text(), path)
    if data is None:
        raise ConfigError(f"{path}: file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars, ``parse_yaml``) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a section")
        node[parts[-1]] = parse_yaml(raw, f"--set {item!r}")
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
    """``preset`` with the fields the caller set on ``given`` (see ``track_set_fields``); a mapping
    ``given`` (``code_learning={"steps": 100}`` in Python) is checked and merged the same way."""
    if isinstance(given, dict):
        return from_dict(type(preset), given, base=preset)
    return dataclasses.replace(preset, **{n: getattr(given, n) for n in fields_set(given)})  # type: ignore[type-var]
