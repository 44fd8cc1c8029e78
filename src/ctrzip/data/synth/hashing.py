"""Stateless per-id randomness: splitmix64 in numpy uint64 arithmetic.

Why: a field such as Criteo's C3 has a support of ~2e9 values, so per-id teacher parameters
cannot be stored; they are recomputed from a hash of (seed, field, id) wherever they are needed,
which also makes them identical in every worker process.
"""

from __future__ import annotations

import numpy as np

from ctrzip._utils import _GOLDEN as GAMMA
from ctrzip._utils import mix_key, splitmix64

__all__ = [
    "GAMMA",
    "mix_key",
    "splitmix64",
    "id_states",
    "stream",
    "uniform01",
    "normal_pair",
    "normals",
    "fmix32",
]

_MASK32 = np.uint64(0xFFFFFFFF)
_TWO_PI = 2.0 * np.pi


def id_states(key: np.uint64, ids: np.ndarray) -> np.ndarray:
    """One 64-bit state per id under ``key``; streams of draws start from it."""
    with np.errstate(over="ignore"):
        return splitmix64(np.asarray(ids).astype(np.uint64) ^ key)


def stream(state: np.ndarray, j: int) -> np.ndarray:
    """Draw ``j`` (0, 1, ...) of the splitmix sequence started at ``state``."""
    with np.errstate(over="ignore"):
        return splitmix64(state + np.uint64(j + 1) * GAMMA)


def uniform01(h: np.ndarray) -> np.ndarray:
    """Top 53 bits of ``h`` as a float64 in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def normal_pair(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent N(0, 1) draws per hash (Box-Muller on its two 32-bit halves)."""
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * (1.0 / 4294967296.0)
    u2 = (h & _MASK32).astype(np.float64) * (1.0 / 4294967296.0)
    r = np.sqrt(-2.0 * np.log(u1))
    return r * np.cos(_TWO_PI * u2), r * np.sin(_TWO_PI * u2)


def normals(state: np.ndarray, count: int, first_stream: int = 0) -> np.ndarray:
    """``count`` N(0, 1) draws per state -> [len(state), count] float64."""
    out = np.empty((len(state), count), dtype=np.float64)
    for j in range(0, count, 2):
        a, b = normal_pair(stream(state, first_stream + j // 2))
        out[:, j] = a
        if j + 1 < count:
            out[:, j + 1] = b
    return out


def fmix32(x: np.ndarray) -> np.ndarray:
    """A bijection of uint32 (MurmurHash3 finalizer): distinct ranks -> distinct raw tokens."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint32)
        z = z ^ (z >> np.uint32(16))
        z = z * np.uint32(0x85EBCA6B)
        z = z ^ (z >> np.uint32(13))
        z = z * np.uint32(0xC2B2AE35)
        return z ^ (z >> np.uint32(16))
