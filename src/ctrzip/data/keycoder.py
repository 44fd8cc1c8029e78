"""Short raw values as 64-bit keys, and a vectorized hash map from keys to dense codes.

Why: a Criteo or Avazu value is at most 8 ASCII bytes (hashed ids, small integers,
timestamps), so its bytes, zero-padded, are an exact 64-bit key. Coding a block of keys
with an open-addressing table in numpy costs a few array passes, where coding strings
costs a string hash per value; each distinct value is then decoded to text only once.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

_FIB = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio: multiplicative hashing
# grow past this load, back to _GROWN_LOAD: 20-30 bytes a key; fuller tables cost walks
_MAX_LOAD = 0.6
_GROWN_LOAD = 0.4
_PAD = 64  # slots past the last home slot, for collisions there
_CLAIM = np.uint32(1 << 31)  # + pending index: a slot claimed during insertion (codes < 2**31)
_SLOT = np.dtype([("key", "<u8"), ("code", "<u4")])  # packed: 12 bytes a slot
_HI = np.uint64(32)
_PLACE_ROWS = 1 << 20


def hash_keys(keys: np.ndarray) -> np.ndarray:
    """The top 32 bits of a 64-bit multiplicative hash (as uint64), which pick a key's home
    slot once scaled to the table (computed ahead, in the reader thread)."""
    h = keys * _FIB
    h >>= _HI
    return h


class KeyCoder:
    """uint64 key -> code: key 0 (the empty value) -> 0, other keys -> 1, 2, ... when first seen.

    Linear probing without wrap-around: a key's home slot is the top 32 bits of a
    multiplicative hash scaled to the number of home slots (any number: the table grows by
    ~1.5x, keeping its load in 0.4..0.6); collisions move right into a padding area past
    the home slots, so a probe never needs a modulo and the table always ends with a free
    slot. A slot is one packed (key uint64, code uint32) record: 12 bytes, one probe.

    Args:
        bits: log2 of the initial number of home slots.
    """

    def __init__(self, bits: int = 16) -> None:
        self._known = np.zeros(1 << 10, dtype=np.uint64)  # key of code k + 1 at [k]
        self.size = 0
        self._alloc(1 << bits)

    def _alloc(self, home: int) -> None:
        self._home = home
        self._scale = np.uint64(home)
        self._table = np.zeros(home + _PAD, dtype=_SLOT)  # code 0 = free

    @property
    def keys(self) -> np.ndarray:
        """Key of every code: ``keys[k - 1]`` is the key of code ``k``."""
        return self._known[: self.size]

    def _slots(self, keys: np.ndarray, hashed: np.ndarray | None = None) -> np.ndarray:
        h = hash_keys(keys) if hashed is None else hashed
        h *= self._scale
        h >>= _HI
        return h.view(np.int64)  # < home: the same values, no conversion pass

    def encode(self, keys: np.ndarray, hashed: np.ndarray | None = None) -> np.ndarray:
        """int32 codes of ``keys`` (uint64 [n]); unseen non-zero keys get new codes.

        ``hashed`` (optional, consumed): ``hash_keys(keys)``, computed ahead elsewhere.
        """
        if self.size == 0:  # a first block is all new: insert its distinct keys up front
            self._insert(_first_seen(keys[keys != 0]))
        slots = self._slots(keys, hashed)
        found = self._table.take(slots)
        codes = found["code"].astype(np.int32)
        # a free slot holds key 0, so key 0 at a free slot is a hit with code 0
        miss = np.flatnonzero(found["key"] != keys)
        del found
        if len(miss) == 0:
            return codes
        keys, got = keys[miss], codes[miss]
        # a free home slot means absent; only a slot taken by another key needs a walk
        taken = np.flatnonzero(got != 0)
        got[taken] = self._walk(keys[taken], slots[miss[taken]] + 1)
        absent = np.flatnonzero((got < 0) | ((got == 0) & (keys != 0)))  # key 0 stays 0
        if len(absent):
            keys = keys[absent]
            self._insert(_first_seen(keys))
            got[absent] = self.encode(keys)  # all present now: mostly home-slot hits
        codes[miss] = got
        return codes

    def _walk(self, keys: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Codes of ``keys`` by walking right from ``slots`` to the key (-1: a free slot first)."""
        out = np.zeros(len(keys), dtype=np.int32)
        todo = np.flatnonzero(keys != 0)
        s = slots[todo]
        while len(todo):
            found = self._table.take(s)
            free = found["code"] == 0
            hit = ~free & (found["key"] == keys[todo])
            out[todo[hit]] = found["code"][hit]
            out[todo[free]] = -1
            more = ~hit & ~free
            todo, s = todo[more], s[more] + 1
        return out

    def _insert(self, fresh: np.ndarray) -> None:
        """Add distinct unseen keys with the next codes, growing the table if needed."""
        n = self.size + len(fresh)
        if n >= np.iinfo(np.int32).max:
            raise OverflowError("more than 2**31 distinct keys")
        if n > len(self._known):
            self._known = grow(self._known, n)
        self._known[self.size : n] = fresh
        first = self.size + 1
        self.size = n
        if n > _MAX_LOAD * self._home:
            self._table = np.zeros(0, dtype=_SLOT)  # the old table goes before the new one comes
            self._alloc(int(n / _GROWN_LOAD) + 1)
            fresh, first = self._known[:n], 1
        # in slices: a rehash of tens of millions of keys would otherwise need several
        # temporaries of its size at once (ascending codes across slices keep the placement rule)
        for a in range(0, len(fresh), _PLACE_ROWS):
            part = fresh[a : a + _PLACE_ROWS]
            self._place(part, np.arange(first + a, first + a + len(part), dtype=np.uint32))

    def _place(self, keys: np.ndarray, codes: np.ndarray) -> None:
        """Write distinct absent keys (ascending codes) at the first free slot right of home.
        Each round every pending key claims its slot if free or steps right if taken."""
        s = self._slots(keys)  # a fresh array: modified in place below
        todo = np.arange(len(keys))
        table = self._table
        while len(todo):
            if s.max() >= len(table) - 1:  # keep a free slot at the very end
                table = self._table = np.concatenate([table, np.zeros(_PAD, dtype=_SLOT)])
            col_key, col_code = table["key"], table["code"]
            taken = col_code[s] != 0
            s[taken] += 1
            claim = np.flatnonzero(~taken)
            marks = _CLAIM + todo[claim].astype(np.uint32)  # never a code
            # written in reverse so the lowest code wins a contested slot: codes come in
            # first-seen order, so frequent keys tend to stay in their home slot
            col_code[s[claim][::-1]] = marks[::-1]
            won = claim[col_code[s[claim]] == marks]
            col_key[s[won]] = keys[todo[won]]
            col_code[s[won]] = codes[todo[won]]
            keep = np.ones(len(todo), dtype=bool)
            keep[won] = False
            todo, s = todo[keep], s[keep]


def grow(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` resized to hold at least ``n`` items, by ~1.25x steps (a doubling would leave up
    to half of a large per-value array unused)."""
    return np.resize(a, max(n, len(a) + len(a) // 4 + 1024))


def _first_seen(keys: np.ndarray) -> np.ndarray:
    """Distinct ``keys`` in first-seen order (a hash pass; a sort costs far more)."""
    return pl.Series(keys).unique(maintain_order=True).to_numpy()


def decode_keys(keys: np.ndarray) -> pl.Series:
    """The strings whose zero-padded little-endian bytes are ``keys`` (uint64, ASCII only);
    key 0 (the empty value) gives null, as an empty field reads in Polars."""
    raw = np.ascontiguousarray(keys, dtype="<u8").view(np.uint8).reshape(-1, 8)
    nonzero = raw != 0
    offsets = np.zeros(len(keys) + 1, dtype=np.int32)
    np.cumsum(nonzero.sum(axis=1), out=offsets[1:])
    data = raw[nonzero]  # row-major: each value's bytes in order (no zero inside ASCII text)
    valid = np.packbits(np.diff(offsets) > 0, bitorder="little")
    arr = pa.StringArray.from_buffers(
        len(keys), pa.py_buffer(offsets), pa.py_buffer(data), pa.py_buffer(valid)
    )
    return pl.Series(pl.from_arrow(arr))
