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
    from numba.cpython.unsafe.numbers import trailing_zeros
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

ENABLED = numba is not None and os.environ.get("CTRZIP_NO_JIT", "") not in ("1", "true", "yes")

_FIB = 0x9E3779B97F4A7C15  # the multiplicative hash of ``keycoder`` (any hash gives the same codes)
_MAX_LOAD = 0.6
_GROWN_LOAD = 0.4
_MAX_CODES = int(np.iinfo(np.int32).max) - 1  # codes are int32, like ``KeyCoder``'s


def _jit(fn: Any) -> Any:
    return numba.njit(nogil=True, cache=True)(fn) if numba is not None else fn


_ONES = 0x0101010101010101
_HIGHS = 0x8080808080808080


@_jit
def _tokenize(buf, words, tail, sep, n_lines, wanted, src, out):  # pragma: no cover - compiled
    """Fill ``out`` [n_lines, k] with the exact keys of columns ``src`` (``wanted``: a flag per
    column); False when a line has another number of columns or a wanted field is longer
    than 8 bytes. ``buf`` is ASCII without quotes, CR or NUL (checked by the caller);
    ``words[i]`` is the little-endian word of ``buf[i : i + 8]``, ``tail`` those of the last
    positions (zero-padded).

    A field's terminator (separator or newline) is found within its first word by the
    zero-byte trick (``(x - 0x01..) & ~x & 0x80..`` flags a zero byte of ``x``, the lowest flag
    exactly), so a short field costs one load and a few operations."""
    n_cols = wanted.shape[0]
    n_out = src.shape[0]
    n = buf.shape[0]
    ones, highs = np.uint64(_ONES), np.uint64(_HIGHS)
    sep_word, nl_word = np.uint64(sep) * ones, np.uint64(10) * ones
    row = np.zeros(n_cols, dtype=np.uint64)
    i = 0
    for line in range(n_lines):
        for col in range(n_cols):
            if i >= n:
                return False
            w = words[i] if i < words.shape[0] else tail[i - words.shape[0]]
            x, y = w ^ sep_word, w ^ nl_word
            hit = ((x - ones) & ~x | (y - ones) & ~y) & highs
            if hit != 0:
                length = np.int64(trailing_zeros(hit)) >> 3
                key = w & ((np.uint64(1) << np.uint64(8 * length)) - np.uint64(1))
            else:  # 8 bytes or more
                length = 8
                key = w
                while i + length < n and buf[i + length] != sep and buf[i + length] != 10:
                    length += 1
                if length > 8 and wanted[col]:
                    return False
            i += length
            if i >= n or (buf[i] == 10) != (col == n_cols - 1):
                return False
            row[col] = key
            i += 1
        for j in range(n_out):
            out[line, j] = row[src[j]]
    return i == n


def field_keys(
    data: bytes, separator: str, n_lines: int, n_cols: int, want: list[int], quote: str | None
) -> np.ndarray | None:
    """Compiled ``readers.fields.field_keys``: same arguments, same result."""
    if n_cols < 2 or n_lines == 0 or not data.isascii():
        return None
    if b"\r" in data or b"\x00" in data or (quote is not None and quote.encode() in data):
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    size = len(buf)
    # the word at every position: unaligned 8-byte loads straight from the block (a strided
    # view), the last 7 positions from a zero-padded copy of the end
    start = max(size - 7, 0)
    words = np.ndarray((start,), dtype="<u8", buffer=data, strides=(1,))
    end = data[start:] + bytes(8)
    tail = np.ndarray((size - start,), dtype="<u8", buffer=end, strides=(1,)).copy()
    wanted = np.zeros(n_cols, dtype=np.bool_)
    wanted[want] = True
    src = np.asarray(want, dtype=np.int64)
    out = np.empty((n_lines, len(want)), dtype=np.uint64)
    return out if _tokenize(buf, words, tail, ord(separator), n_lines, wanted, src, out) else None


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
        # codes are int32: the kernel stops at _MAX_CODES keys and ``encode`` then raises
        self._limit = min(int(_MAX_LOAD * slots), _MAX_CODES)

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
                if self.size >= _MAX_CODES:
                    raise OverflowError("more than 2**31 distinct keys")
                self._table = np.zeros((0, 2), dtype=np.uint64)  # the old table goes first
                self._alloc(int(self.size / _GROWN_LOAD) + 1)
                _rehash(self._known, self.size, self._table)
        return codes


@_jit
def _lookup(raw, code, value, bad, check_bad, n_sparse, codes, dense, label):  # pragma: no cover
    """Per keyed row: the label, provisional codes and dense values of its raw codes
    (``raw`` [n, 1 + S + Dn]); False (outputs incomplete) at the first raw code flagged bad."""
    n, k = raw.shape
    for i in range(n):
        if check_bad:
            for j in range(k):
                if bad[raw[i, j]]:
                    return False
        label[i] = value[raw[i, 0]]
        for j in range(n_sparse):
            codes[i, j] = code[raw[i, 1 + j]]
        for j in range(k - 1 - n_sparse):
            dense[i, j] = value[raw[i, 1 + n_sparse + j]]
    return True


def lookup(
    raw: np.ndarray, code: np.ndarray, value: np.ndarray, bad: np.ndarray, check_bad: bool, n_sparse: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(codes int32 [n, S], dense float32 [n, Dn], label float32 [n])`` of raw codes
    ``raw`` [n, 1 + S + Dn] through the keyed path's tables, or None when a row has a raw
    code flagged in ``bad`` (only looked at with ``check_bad``)."""
    n, k = raw.shape
    codes = np.empty((n, n_sparse), dtype=np.int32)
    dense = np.empty((n, k - 1 - n_sparse), dtype=np.float32)
    label = np.empty(n, dtype=np.float32)
    ok = _lookup(raw, code, value, bad, check_bad, n_sparse, codes, dense, label)
    return (codes, dense, label) if ok else None


@_jit
def _group(split, n_splits, codes, dense, label, out_codes, out_dense, out_label, bounds):  # pragma: no cover
    """Rows grouped by split (stable: file order within a split); ``bounds`` [n_splits + 1]."""
    n = split.shape[0]
    for i in range(n):
        if split[i] < 0 or split[i] >= n_splits:
            return False
        bounds[split[i] + 1] += 1
    for s in range(n_splits):
        bounds[s + 1] += bounds[s]
    pos = bounds[:-1].copy()
    for i in range(n):
        r = pos[split[i]]
        pos[split[i]] += 1
        for j in range(codes.shape[1]):
            out_codes[r, j] = codes[i, j]
        for j in range(dense.shape[1]):
            out_dense[r, j] = dense[i, j]
        out_label[r] = label[i]
    return True


def group_by_split(
    split: np.ndarray, n_splits: int, codes: np.ndarray, dense: np.ndarray, label: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(codes, dense, label, bounds)``: the rows ordered by ``split`` (int8 [n], stable), the
    rows of split ``s`` at ``bounds[s]:bounds[s + 1]`` (what a stable argsort and gathers give)."""
    bounds = np.zeros(n_splits + 1, dtype=np.int64)
    out = (np.empty_like(codes), np.empty_like(dense), np.empty_like(label))
    if not _group(split, n_splits, codes, dense, label, *out, bounds):
        raise ValueError(f"split codes must be in [0, {n_splits}), got {split.min()}..{split.max()}")
    return (*out, bounds)
