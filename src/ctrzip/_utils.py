"""Small helpers shared across packages (kept here once, never redefined per file)."""

from __future__ import annotations

from collections.abc import Sequence


def check_rate(name: str, value: float) -> None:
    """Raise ValueError unless ``0 <= value < 1`` (dropout-style rates)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def check_widths(name: str, widths: Sequence[int]) -> None:
    """Raise ValueError unless every layer width is a positive integer."""
    bad = [w for w in widths if w < 1]
    if bad:
        raise ValueError(f"{name} widths must be >= 1, got {list(widths)}")
