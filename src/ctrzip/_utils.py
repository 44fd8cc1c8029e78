"""Small helpers shared across packages (kept here once, never redefined per file)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ctrzip.config import ConfigError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def check_rate(name: str, value: float) -> None:
    """Raise ConfigError unless ``0 <= value < 1`` (dropout-style rates)."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")


def check_widths(name: str, widths: Sequence[int]) -> None:
    """Raise ConfigError unless every layer width is a positive integer."""
    bad = [w for w in widths if w < 1]
    if bad:
        raise ConfigError(f"{name} widths must be >= 1, got {list(widths)}")


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 output function of state ``x`` (uint64, wrapping arithmetic): a fast,
    well-mixed 64-bit hash for stateless per-index randomness."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def mix_key(*parts: int) -> np.uint64:
    """Fold integers (seed, stream tag, ...) into one 64-bit key with ``splitmix64``."""
    key = np.zeros(1, dtype=np.uint64)
    for part in parts:
        key = splitmix64(key ^ np.uint64(part & 0xFFFFFFFFFFFFFFFF))
    return np.uint64(key[0])
