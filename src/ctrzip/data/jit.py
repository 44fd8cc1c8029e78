"""Compiled (numba) kernels of the encoder's keyed fast path, used when numba is installed.

Why: splitting raw text into fields and coding their values through a hash table are
byte-at-a-time and key-at-a-time loops. In numpy they take a dozen array passes per block
(separator search, gathers, probe rounds); compiled, each is one pass that releases the GIL,
so the reader thread and the main thread run on both cores. The kernels give exactly what
their numpy counterparts give (``readers.fields.field_keys``, ``keycoder.KeyCoder``): the
same keys, the same decline rules, the same codes in first-seen order; the tests compare
them. Without numba (``pip install 'ctrzip[fast]'``) the numpy versions run.

``CTRZIP_NO_JIT=1`` turns the kernels off (comparisons, debugging).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

try:  # an optional dependency: the numpy path is complete without it
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

ENABLED = numba is not None and os.environ.get("CTRZIP_NO_JIT", "") not in ("1", "true", "yes")

_FIB = 0x9E3779B97F4A7C15  # the multiplicative hash of ``keycoder`` (any hash gives the same codes)
_MAX_LOAD = 0.6
_GROWN_LOAD = 0.4


def _jit(fn: Any) -> Any:
    return numba.njit(nogil=True, cache=True)(fn) if numba is not None else fn


@_jit
def _tokenize(buf, kind, n_lines, wanted, src, out):  # pragma: no cover - compiled
    """Fill ``out`` [n_lines, k] with the exact keys of columns ``src`` (``wanted``: a flag per
    column); False when the block is not plain short ASCII fields (``field_keys``'s rules).
    ``kind`` [256]: 0 a field byte, 1 the separator, 2 a newline, 3 a byte that declines."""
    n_cols = wanted.shape[0]
    n_out = src.shape[0]
    n = buf.shape[0]
    row = np.zeros(n_cols, dtype=np.uint64)
    i = 0
    for line in range(n_lines):
        for col in range(n_cols):
            start = i
            while i < n and kind[buf[i]] == 0:
                i += 1
            if i == n:
                return False
            c = kind[buf[i]]
            if c == 3 or (c == 2) != (col == n_cols - 1):
                return False
            if wanted[col]:
                if i - start > 8:
                    return False
                key = np.uint64(0)
                for t in range(i - start):
                    key |= np.uint64(buf[start + t]) << np.uint64(8 * t)
                row[col] = key
            i += 1
        for j in range(n_out):
            out[line, j] = row[src[j]]
    return i == n


def field_keys(
    data: bytes, separator: str, n_lines: int, n_cols: int, want: list[int], quote: str | None
) -> np.ndarray | None:
    """Compiled ``readers.fields.field_keys``: same arguments, same result."""
    if n_cols < 2 or n_lines == 0:
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    wanted = np.zeros(n_cols, dtype=np.bool_)
    wanted[want] = True
    src = np.asarray(want, dtype=np.int64)
    out = np.empty((n_lines, len(want)), dtype=np.uint64)
    return out if _tokenize(buf, _kinds(separator, quote), n_lines, wanted, src, out) else None


def _kinds(separator: str, quote: str | None) -> np.ndarray:
    kind = np.zeros(256, dtype=np.uint8)
    kind[128:] = kind[13] = kind[0] = 3  # non-ASCII, carriage return, NUL
    if quote is not None:
        kind[ord(quote)] = 3
    kind[ord(separator)], kind[10] = 1, 2
    return kind


@_jit
def _encode(keys, table, known, size, limit, codes):  # pragma: no cover - compiled
    """Code ``keys`` from the start through a linear-probing table of (key, code) slots
    (``table`` [slots, 2]: one cache line per probe; multiplicative hash, home slot = top 32
    bits scaled to the table). New non-zero keys get codes ``size + 1, ...`` in first-seen
    order and go to ``known``. Stops before the key that would make the table hold more
    than ``limit`` keys; returns ``(keys coded, new size)``."""
    n_slots = table.shape[0]
    home = np.uint64(n_slots)
    fib = np.uint64(_FIB)
    for i in range(keys.shape[0]):
        k = keys[i]
        if k == 0:
            codes[i] = 0
            continue
        s = np.int64((((k * fib) >> np.uint64(32)) * home) >> np.uint64(32))
        while True:
            c = table[s, 1]
            if c == 0:
                if size >= limit:
                    return i, size
                size += 1
                table[s, 0] = k
                table[s, 1] = size
                known[size - 1] = k
                codes[i] = size
                break
            if table[s, 0] == k:
                codes[i] = c
                break
            s += 1
            if s == n_slots:
                s = 0
    return keys.shape[0], size


@_jit
def _rehash(known, size, table):  # pragma: no cover - compiled
    n_slots = table.shape[0]
    home = np.uint64(n_slots)
    fib = np.uint64(_FIB)
    for i in range(size):
        k = known[i]
        s = np.int64((((k * fib) >> np.uint64(32)) * home) >> np.uint64(32))
        while table[s, 1] != 0:
            s += 1
            if s == n_slots:
                s = 0
        table[s, 0] = k
        table[s, 1] = i + 1


class JitKeyCoder:
    """Compiled ``keycoder.KeyCoder``: uint64 key -> code, key 0 -> 0, other keys -> 1, 2, ...
    in first-seen order (the same codes as ``KeyCoder``). Open addressing with linear probing
    (wrapping), kept between 0.4 and 0.6 full: 16 bytes a slot, ~32 bytes a key.

    Args:
        bits: log2 of the initial number of slots.
    """

    def __init__(self, bits: int = 16) -> None:
        self.size = 0
        self._known = np.zeros(1 << 10, dtype=np.uint64)
        self._alloc(1 << bits)

    def _alloc(self, slots: int) -> None:
        self._table = np.zeros((slots, 2), dtype=np.uint64)
        self._limit = int(_MAX_LOAD * slots)

    @property
    def keys(self) -> np.ndarray:
        """Key of every code: ``keys[k - 1]`` is the key of code ``k``."""
        return self._known[: self.size]

    def encode(self, keys: np.ndarray, hashed: np.ndarray | None = None) -> np.ndarray:
        """int32 codes of ``keys`` (uint64 [n]); unseen non-zero keys get new codes.
        (``hashed`` is accepted for ``KeyCoder``'s signature and not needed.)"""
        from ctrzip.data.keycoder import grow

        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        codes = np.empty(len(keys), dtype=np.int32)
        done = 0
        while done < len(keys):
            if self.size + (len(keys) - done) > len(self._known):
                self._known = grow(self._known, self.size + len(keys) - done)
            n, self.size = _encode(
                keys[done:], self._table, self._known, self.size, self._limit, codes[done:]
            )
            done += n
            if done < len(keys):  # the table is full: rehash into one ~1.5x larger
                if self.size + 1 >= np.iinfo(np.int32).max:
                    raise OverflowError("more than 2**31 distinct keys")
                self._table = np.zeros((0, 2), dtype=np.uint64)  # the old table goes first
                self._alloc(int(self.size / _GROWN_LOAD) + 1)
                _rehash(self._known, self.size, self._table)
        return codes
