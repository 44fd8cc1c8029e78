"""Target finders: which modules a method compresses, found by walking, never by model name."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from torch import nn

from ctrzip.config import ConfigError
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.mlp import MLP


def match(names: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """Names matching any fnmatch-style glob in ``patterns`` (order of ``names`` kept)."""
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def mlp_linears(model: nn.Module, skip_first: bool = True) -> dict[str, nn.Linear]:
    """Hidden ``nn.Linear`` layers of every ``MLP`` tower: the default low-rank targets.

    The output head (a Linear that is the tower's last layer) is never returned. The first
    hidden layer is skipped by default because its input is the embedding concat, which
    may be narrow (paper section 3.2; it is also the fold target of embedding compression).

    Args:
        model: root module.
        skip_first: leave out each tower's first hidden Linear.
    """
    out: dict[str, nn.Linear] = {}
    for prefix, mod in model.named_modules():
        if not isinstance(mod, MLP):
            continue
        children = list(mod.layers.named_children())
        hidden = [
            (name, m)
            for i, (name, m) in enumerate(children)
            if hasattr(m, "in_features") and i < len(children) - 1
        ]
        if skip_first:
            hidden = hidden[1:]
        for name, m in hidden:
            if isinstance(m, nn.Linear):
                out[f"{prefix}.layers.{name}" if prefix else f"layers.{name}"] = m
    return out


def linears_by_glob(model: nn.Module, patterns: Sequence[str]) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` whose fqn matches one of ``patterns``; raises if none does."""
    named = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    hits = match(named, patterns)
    if not hits:
        raise ConfigError(f"no nn.Linear matches {list(patterns)} (have: {', '.join(named) or 'none'})")
    return {n: named[n] for n in hits}


def tables(model: nn.Module, fields: Sequence[str] | None = None) -> dict[str, EmbeddingTable]:
    """The tables of ``model.embedding`` (sparse fields; first-order tables excluded).

    Args:
        model: a ``CTRModel`` (anything with ``.embedding.tables``).
        fields: field-name globs (None = every sparse field); raises if a glob matches nothing.
    """
    all_tables = dict(model.embedding.tables.items())  # type: ignore[union-attr]
    if fields is None:
        names = list(all_tables)
    else:
        names = match(all_tables, fields)
        missing = [p for p in fields if not match(all_tables, [p])]
        if missing:
            raise ConfigError(f"field patterns {missing} match no table (have: {', '.join(all_tables)})")
    return {n: all_tables[n] for n in names}  # type: ignore[misc]
