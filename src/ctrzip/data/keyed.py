"""The encoder's fast path: code a keyed block through per-value lookup tables.

Why: on raw Criteo or Avazu the same few million distinct values repeat across tens of
millions of rows. Each (slot, raw value) gets a code from one hash table over 64-bit keys
(``KeyCoder``); the generic Polars logic of ``ColumnPlan`` runs once per *new* distinct value
to fill lookup tables (label, provisional code, dense value, bad flag); a block is then a few
gathers. The provisional codes are the generic path's own (same Categories, same token
coder), so keyed and generic blocks mix freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
import polars as pl

from ctrzip.data import jit
from ctrzip.data.config import FeatureConfig
from ctrzip.data.keycoder import KeyCoder, decode_keys, grow, hash_keys
from ctrzip.data.readers.base import RawTable
from ctrzip.data.values import bad_timestamp, bucket_numpy, number_range, out_of_range


class _Tokens(Protocol):
    def encode(self, tokens: np.ndarray) -> np.ndarray: ...


class ColumnRules(Protocol):
    """What ``KeyedCoder`` needs of ``ctrzip.data.columns.ColumnPlan`` (which owns this
    coder; typed here so neither module imports the other)."""

    sparse: list[FeatureConfig]
    dense: list[FeatureConfig]
    lazy: bool

    @property
    def key_columns(self) -> list[str] | None: ...

    @property
    def tokens(self) -> Mapping[str, _Tokens]: ...

    def next_codes(self, name: str, present: np.ndarray, raw: np.ndarray) -> np.ndarray: ...

    def code_expr(self, f: FeatureConfig, src: pl.Expr | None = None) -> pl.Expr: ...

    def token_string(self, f: FeatureConfig, src: pl.Expr | None = None) -> pl.Expr: ...

    def record_categories(self, name: str, codes: np.ndarray, text: pl.Series) -> None: ...


_BYTE_TOPS = np.array([8 * i + 7 for i in range(8)], dtype=np.uint64)  # free bit of each ASCII byte
_TEXT = np.uint64(0x7F7F7F7F7F7F7F7F)


def _spread(slots: np.ndarray) -> np.ndarray:
    """Slot numbers (1..255) spread over the top bits of the 8 bytes: ASCII keys leave these 0."""
    bits = (slots[:, None].astype(np.uint64) >> np.arange(8, dtype=np.uint64)) & np.uint64(1)
    return np.bitwise_or.reduce(bits << _BYTE_TOPS, axis=1)


def _unspread(keys: np.ndarray) -> np.ndarray:
    bits = (keys[:, None] >> _BYTE_TOPS) & np.uint64(1)
    return (bits << np.arange(8, dtype=np.uint64)).sum(axis=1).astype(np.intp)


class KeyedCoder:
    """Lookup tables from (slot, raw value) to what ``ColumnPlan`` makes of the value.

    Slots follow ``plan.key_columns``: 0 = label, then sparse fields, then dense fields.

    Args:
        plan: the column plan whose generic logic defines every value's meaning.
    """

    def __init__(self, plan: ColumnRules) -> None:
        assert plan.key_columns is not None
        self.plan = plan
        self.n_sparse = len(plan.sparse)
        self.fields = plan.sparse + plan.dense  # slot s > 0 holds fields[s - 1]
        self.salt = _spread(np.arange(1, len(plan.key_columns) + 1))
        self.coder: KeyCoder | jit.JitKeyCoder = jit.JitKeyCoder(12) if jit.ENABLED else KeyCoder(12)
        # per raw code, one 4-byte word: the provisional code of a sparse slot, or (as
        # float32, the same memory) the value of a label or dense slot (NaN = missing)
        self._code = np.zeros(1, dtype=np.int32)
        self._value = self._code.view(np.float32)
        self._bad = np.zeros(1, dtype=bool)
        self._n_bad = 0

    def prepare(self, table: RawTable) -> RawTable:
        """Stateless work on a keyed block, done ahead in the reader thread: salt the keys
        with their slot (in place) and, for the numpy coder, hash them (``RawTable.hashes``)."""
        if table.keys is not None and not table.salted:
            table.keys ^= self.salt
            table.salted = True
            if isinstance(self.coder, KeyCoder):
                table.hashes = hash_keys(table.keys)
        return table

    def code(self, table: RawTable) -> RawTable:
        """The raw codes of a prepared keyed block (``RawTable.raw``, with the range of raw
        codes it created in ``RawTable.coded``). Blocks must come in order; this may run
        ahead of ``apply`` in another thread (``apply`` learns each block's new codes)."""
        if table.keys is None or table.raw is not None:
            return table
        keys, hashes = table.keys, table.hashes
        assert table.salted, "KeyedCoder.prepare first"
        table.keys = table.hashes = None  # salted and consumed: not reusable
        before = self.coder.size
        flat_hashes = None if hashes is None else hashes.reshape(-1)
        table.raw = self.coder.encode(keys.reshape(-1), flat_hashes).reshape(keys.shape)
        table.coded = (before, self.coder.size)
        return table

    def apply(self, table: RawTable) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(codes [n, S], dense [n, Dn], label [n])`` of a prepared keyed block, or None
        when it has a bad value (the generic path then reports and drops the bad rows)."""
        assert table.raw is not None or (table.keys is not None and table.salted), "KeyedCoder.prepare first"
        raw, (before, after) = self.code(table).raw, table.coded
        table.raw = None
        if after > before:
            self._learn(before, after)
        if jit.ENABLED:  # one pass: the bad-value check and the three gathers
            return jit.lookup(raw, self._code, self._value, self._bad, self._n_bad > 0, self.n_sparse)
        if self._n_bad and self._bad[raw].any():
            return None
        s = self.n_sparse
        return self._code[raw[:, 1 : 1 + s]], self._value[raw[:, 1 + s :]], self._value[raw[:, 0]]

    def _learn(self, before: int, after: int) -> None:
        """Fill the tables for the raw codes ``before + 1 .. after`` of one block."""
        keys = self.coder.keys[before:after]
        size = after + 1
        if size > len(self._code):
            self._code, self._bad = grow(self._code, size), grow(self._bad, size)
            self._value = self._code.view(np.float32)
        text = keys & _TEXT  # 0 = the empty value (missing)
        slots = _unspread(keys) - 1
        order = np.argsort(slots, kind="stable")
        bounds = np.searchsorted(slots[order], np.arange(len(self.salt) + 1))
        groups = {int(s): order[bounds[s] : bounds[s + 1]] for s in np.flatnonzero(np.diff(bounds))}
        new = slice(before + 1, size)
        self._code[new], self._bad[new] = 0, False  # every slot's handler below sets its word
        self._numbers(text, groups, before + 1)
        self._categories(text, groups, before + 1)
        self._n_bad += int(self._bad[new].sum())

    def _numbers(self, text: np.ndarray, groups: dict[int, np.ndarray], first: int) -> None:
        """Label and numeric slots: one float cast for all their new values, as the generic
        path casts them (``strict=False``: a non-number is null, then flagged)."""
        slots = [s for s in groups if s == 0 or self.fields[s - 1].type == "numeric"]
        if not slots:
            return
        keys = text[np.concatenate([groups[s] for s in slots])]
        number = decode_keys(keys).cast(pl.Float64, strict=False).to_numpy()
        pos = 0
        for s in slots:
            codes = groups[s] + first
            x, present = number[pos : pos + len(codes)], keys[pos : pos + len(codes)] != 0
            pos += len(codes)
            if s == 0:
                self._value[codes], self._bad[codes] = x, (x != 0) & (x != 1)
                continue
            f = self.fields[s - 1]
            lo, hi, _ = number_range([f])
            bad = out_of_range(x, present, lo, hi)  # the generic path reports it
            x = np.where(bad, np.nan, x)  # a bad row is never coded: no junk tokens
            self._bad[codes] = bad
            if f.is_dense:
                self._value[codes] = x
            else:
                self._code[codes] = self.plan.tokens[f.name].encode(bucket_numpy(x))

    def _categories(self, text: np.ndarray, groups: dict[int, np.ndarray], first: int) -> None:
        """Categorical slots: one Polars ``select`` codes the new values of all of them (a
        column per slot, padded with nulls) with the generic path's expressions. While the
        plan is ``lazy``, a plain field's new values just take the next codes, undecoded
        (the plan keeps their raw codes and decodes only the values it needs at the end)."""
        plan = self.plan
        slots = [s for s in groups if s > 0 and self.fields[s - 1].type == "categorical"]
        if plan.lazy:
            for s in [s for s in slots if self.fields[s - 1].derive is None]:
                present = text[groups[s]] != 0
                got = plan.next_codes(self.fields[s - 1].name, present, groups[s][present] + first)
                self._code[groups[s] + first] = got
            slots = [s for s in slots if self.fields[s - 1].derive is not None]
        if not slots:
            return
        height = max(len(groups[s]) for s in slots)
        padded = np.zeros((len(slots), height), dtype=np.uint64)
        for row, s in zip(padded, slots, strict=True):
            row[: len(groups[s])] = text[groups[s]]
        flat = decode_keys(padded.reshape(-1))
        frame = pl.DataFrame([flat.slice(i * height, height).alias(f"v{s}") for i, s in enumerate(slots)])
        exprs = []
        for s in slots:
            f, src = self.fields[s - 1], pl.col(f"v{s}")
            exprs.append(plan.code_expr(f, src).alias(f"c{s}"))
            if f.derive is not None:
                exprs += [plan.token_string(f, src).alias(f"t{s}"), bad_timestamp(src).alias(f"b{s}")]
        out = frame.select(exprs)
        for s in slots:
            f, n, codes = self.fields[s - 1], len(groups[s]), groups[s] + first
            got = out.get_column(f"c{s}").to_numpy()[:n]
            tokens = out.get_column(f"t{s}") if f.derive is not None else frame.get_column(f"v{s}")
            plan.record_categories(f.name, got, tokens.slice(0, n))
            self._code[codes] = got
            if f.derive is not None:
                self._bad[codes] = out.get_column(f"b{s}").to_numpy()[:n]

    def text_of(self, raw: np.ndarray) -> pl.Series:
        """The raw values (strings; null = empty) of raw codes ``raw`` (slot salt removed)."""
        return decode_keys(self.coder.keys[np.asarray(raw, dtype=np.intp) - 1] & _TEXT)
