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


def fail(message: str) -> typer.Exit:
    """Print an error in red and return an Exit(2) to raise."""
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(str(col))
    for row in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()])
    console.print(table)


__all__ = ["ConfigError", "console", "fail", "print_table", "read_config"]
