"""Helpers shared by CLI commands: config loading with overrides, error reporting, tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ctrzip.config import ConfigError, apply_overrides, load_yaml

console = Console()


def read_config(path: Path | None, overrides: Sequence[str] | None) -> dict[str, Any]:
    data = load_yaml(path) if path else {}
    return apply_overrides(data, list(overrides or []))


def error_line(message: str) -> None:
    """Print ``error: message`` to stderr as exactly one line (never wrapped, newlines folded)."""
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    typer.echo(f"error: {text}", err=True)


def fail(message: str) -> typer.Exit:
    """Print one ``error:`` line and return an Exit(2) to raise."""
    error_line(message)
    return typer.Exit(code=2)


def checked_split(ds: Any, split: str, where: str | Path, *, both_classes: bool = True) -> Any:
    """``ds[split]`` after checking it exists, has rows and (by default) both label classes.

    Raises:
        DataFormatError: naming the dataset folder and the split.
    """
    import numpy as np

    from ctrzip.data.readers import DataFormatError

    if split not in ds.splits:
        have = ", ".join(ds.splits) or "none"
        raise DataFormatError(f"{where}: no split {split!r} (have: {have})")
    arrays = ds[split]
    labels = np.asarray(arrays.label)
    if labels.size == 0:
        raise DataFormatError(f"{where}: split {split!r} has no rows")
    if both_classes and labels.min() == labels.max():
        raise DataFormatError(
            f"{where}: split {split!r} has only label {labels[0]:g} in all {labels.size:,} rows; "
            "AUC is undefined on one class (re-split the data or use another split)"
        )
    return arrays


def checked_schema(net: Any, ds: Any, model: str | Path, data: str | Path) -> None:
    """Refuse a dataset whose fields (names, kinds, vocab sizes) differ from the model's schema.

    Raises:
        DataFormatError: naming both folders and the first differing field.
    """
    from ctrzip.data.readers import DataFormatError

    mine, theirs = ds.schema.to_dict()["fields"], net.schema.to_dict()["fields"]
    if mine != theirs:
        diff = next((f"{a.get('name')}" for a, b in zip(mine, theirs, strict=False) if a != b), None)
        where = f"field {diff!r} differs" if diff else f"{len(mine)} fields vs {len(theirs)}"
        raise DataFormatError(
            f"{data}: its feature map differs from the model's schema ({model}/schema.json): {where}; "
            "use the dataset the model was trained on"
        )


def checked_device(device: str, option: str = "--device") -> str:
    """``device`` after checking that this machine/torch build can use it (``auto`` always can).

    Raises:
        ConfigError: naming the option, e.g. ``cuda`` on a CPU-only build.
    """
    from ctrzip.data.loader import resolve_device

    try:
        resolve_device(device)
    except ConfigError as err:
        raise ConfigError(f"{option}: {err}") from None
    return device


def checked_min(value: int, minimum: int, option: str) -> int:
    """``value`` if it is at least ``minimum``, else a ``ConfigError`` naming ``option``."""
    if value < minimum:
        raise ConfigError(f"{option} must be >= {minimum}, got {value}")
    return value


def saved_line(what: str, path: str | Path) -> str:
    """``saved WHAT to PATH (N B of tensors, M B on disk)``: the stored size that every report
    counts, beside what the artifact folder takes on disk (headers, manifest and schema included)."""
    from ctrzip.export import artifact_sizes

    sizes = artifact_sizes(path)
    tensors, disk = sizes["tensor_bytes"], sizes["disk_bytes"]
    return f"saved {what} to {path} ({tensors:,} B of tensors, {disk:,} B on disk)"


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title=title)
    cells = [[_cell(k, v) for k, v in row.items()] for row in rows]
    for i, col in enumerate(rows[0]):
        widest = max(len(r[i]) for r in cells)
        # numbers and identifiers (a target's fqn, a split) are never cut; text with spaces
        # (a demo row's label, a reason) wraps instead
        whole = all(" " not in r[i] for r in cells)
        table.add_column(str(col), no_wrap=whole, min_width=widest if whole else None)
    for r in cells:
        table.add_row(*r)
    console.print(table)


def _cell(key: str, value: Any) -> str:
    """Metrics with 4 decimals; a row count ``n`` (a float in metric dicts) as a whole number."""
    if key == "n" and isinstance(value, float) and value.is_integer():
        return f"{value:,.0f}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


__all__ = [
    "ConfigError",
    "checked_device",
    "checked_min",
    "checked_schema",
    "checked_split",
    "console",
    "error_line",
    "fail",
    "print_table",
    "read_config",
    "saved_line",
]
