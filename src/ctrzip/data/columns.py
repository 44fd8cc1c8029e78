"""Raw string columns -> provisional integer codes, vectorized, with bad-value detection.

Why provisional codes: the final ids need the training counts, which are only known after a
full pass. Pass 1 turns every categorical value into a stable code (a Polars ``Categories``
string table that persists across blocks), every bucketed number into a stable code of its
integer token (``TokenCoder``), and keeps dense numbers raw; pass 2 maps codes to final ids
with one lookup table, with no re-parse. Code 0 is always "missing" (or sequence padding).
Blocks whose fields arrive as exact 64-bit keys skip the per-row string work: ``KeyedCoder``
(``ctrzip.data.keyed``) runs the expressions below once per new distinct value instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from ctrzip.data.config import DatasetConfig, FeatureConfig
from ctrzip.data.keyed import KeyedCoder
from ctrzip.data.readers.base import BadRows, RawTable
from ctrzip.data.values import bad_timestamp, blank_to_null, bucket_numpy, number_range, out_of_range

_TABLE_SPAN = 1 << 22  # token range served by a direct table (wider: sorted search)


@dataclass
class CodedBlock:
    """Pass-1 output for one block (bad rows already removed).

    ``codes`` holds per sparse column a provisional code: 0 = missing/pad, k + 1 = the k-th
    value of the field (``ColumnPlan.values``).
    """

    codes: np.ndarray  # int32 [n, S]
    dense: np.ndarray  # float32 [n, Dn] (NaN = missing)
    label: np.ndarray  # float32 [n]
    rows: np.ndarray  # int64 [n] data-row index


class TokenCoder:
    """Stable codes for integer tokens across blocks: code k + 1 <-> ``values[k]``, 0 = missing.

    Why: numeric buckets then flow through the same count/lookup path as strings. A direct
    table over the token range makes coding one gather per value.
    """

    def __init__(self) -> None:
        self.values: list[int] = []
        self._base = 0  # token stored at table[1]
        self._table = np.zeros(1, dtype=np.int32)  # table[0]: missing; -1: not seen yet
        self._sorted = np.zeros(0, dtype=np.int64)  # wide-range fallback: sorted tokens
        self._codes = np.zeros(0, dtype=np.int32)

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        """int32 codes of float ``tokens`` (integral values; NaN = missing)."""
        present = ~np.isnan(tokens)
        if not present.any():
            return np.zeros(len(tokens), dtype=np.int32)
        lo, hi = int(np.nanmin(tokens)), int(np.nanmax(tokens))
        top = self._base + len(self._table) - 2
        if len(self._sorted) == 0 and max(hi, top) - min(lo, self._base) < _TABLE_SPAN:
            return self._encode_table(tokens, lo, hi)
        return self._encode_sorted(tokens, present)

    def _encode_table(self, tokens: np.ndarray, lo: int, hi: int) -> np.ndarray:
        if not self.values:
            self._base, self._table = lo, np.full(hi - lo + 2, -1, dtype=np.int32)
            self._table[0] = 0
        elif lo < self._base or hi > self._base + len(self._table) - 2:
            base = min(lo, self._base)
            table = np.full(max(hi, self._base + len(self._table) - 2) - base + 2, -1, dtype=np.int32)
            table[0] = 0
            off = self._base - base
            table[1 + off : len(self._table) + off] = self._table[1:]
            self._base, self._table = base, table
        idx = np.nan_to_num(tokens - (self._base - 1), nan=0.0).astype(np.int64)
        codes = self._table[idx]
        new = codes < 0
        if new.any():
            fresh = np.unique(idx[new])
            start = len(self.values) + 1
            self._table[fresh] = np.arange(start, start + len(fresh), dtype=np.int32)
            self.values.extend((fresh + self._base - 1).tolist())
            codes[new] = self._table[idx[new]]
        return codes

    def _encode_sorted(self, tokens: np.ndarray, present: np.ndarray) -> np.ndarray:
        if len(self._sorted) == 0 and self.values:
            keys = np.asarray(self.values, dtype=np.int64)
            order = np.argsort(keys)
            self._sorted, self._codes = keys[order], (order + 1).astype(np.int32)
        t = tokens[present].astype(np.int64)
        fresh = np.setdiff1d(np.unique(t), self._sorted, assume_unique=True)
        if len(fresh):
            start = len(self.values) + 1
            self.values.extend(fresh.tolist())
            keys = np.concatenate([self._sorted, fresh])
            codes = np.concatenate([self._codes, np.arange(start, start + len(fresh), dtype=np.int32)])
            order = np.argsort(keys, kind="stable")
            self._sorted, self._codes = keys[order], codes[order]
        out = np.zeros(len(tokens), dtype=np.int32)
        out[present] = self._codes[np.searchsorted(self._sorted, t)]
        return out


class ColumnPlan:
    """How each configured feature is read from string columns.

    Args:
        config: the dataset config.
    """

    def __init__(self, config: DatasetConfig) -> None:
        self.config = config
        self.sparse = [f for f in config.features if not f.is_dense]
        self.dense = [f for f in config.features if f.is_dense]
        self.slices: dict[str, slice] = {}
        col = 0
        for f in self.sparse:
            self.slices[f.name] = slice(col, col + f.width)
            col += f.width
        self.width = col
        tag = uuid.uuid4().hex[:12]
        self.categories = {
            f.name: pl.Categories(f"ctrzip-{tag}-{f.name}") for f in self.sparse if f.type != "numeric"
        }
        # A Categories table lives only while some Series uses it: keep one per field alive
        # so codes stay stable across blocks.
        self._alive = [pl.Series(name, [], dtype=pl.Categorical(c)) for name, c in self.categories.items()]
        # every category as it is created (code, text): reading them back from a Categories
        # object afterwards goes through Python one value at a time
        self._made: dict[str, list[tuple[np.ndarray, pl.Series]]] = {n: [] for n in self.categories}
        self._n_made = dict.fromkeys(self.categories, 0)
        self.tokens = {f.name: TokenCoder() for f in self.sparse if f.type == "numeric"}
        self.keyed = KeyedCoder(self) if self.key_columns is not None else None
        # While only keyed blocks were seen, plain categorical fields number their values
        # themselves (``next_codes``) and the Categories tables stay empty: a Categories entry
        # costs ~100 bytes, tens of millions of them are most of the encoder's memory.
        self.lazy = self.keyed is not None
        self._lazy_raw: dict[str, list[np.ndarray]] = {n: [] for n in self.categories}  # raw code per code

    @property
    def source_columns(self) -> list[str]:
        cols = [self.config.label]
        for f in self.config.features:
            if f.column not in cols:
                cols.append(f.column)
        return cols

    @property
    def key_columns(self) -> list[str] | None:
        """Source column of each value slot (label, sparse, dense fields) for the keyed fast
        path, or None when a field needs more than one value per row (sequences)."""
        if any(f.type == "sequence" for f in self.sparse) or len(self.sparse) + len(self.dense) >= 255:
            return None
        return [self.config.label] + [f.column for f in self.sparse] + [f.column for f in self.dense]

    def values(self, name: str, index: np.ndarray | None = None) -> pl.Series:
        """Values of a sparse field's provisional codes (index k <-> code k + 1), all of them
        or those at ``index`` (the training vocabulary needs only the frequent few)."""
        if name in self.tokens:
            out = pl.Series(name, self.tokens[name].values, dtype=pl.Int64)
            return out if index is None else out[index]
        if self.lazy and self._lazy_raw.get(name):
            assert self.keyed is not None
            raw = np.concatenate(self._lazy_raw[name])  # code k + 1 <-> raw[k]
            return self.keyed.text_of(raw if index is None else raw[index]).rename(name)
        made = self._made[name]
        if made:
            codes = np.concatenate([c for c, _ in made])
            fresh, first = np.unique(codes, return_index=True)
            if np.array_equal(fresh, np.arange(1, len(fresh) + 1)):
                return pl.concat([t for _, t in made])[first if index is None else first[index]].rename(name)
        if self._n_made[name] == 0:
            return pl.Series(name, [], dtype=pl.String)
        out = self.categories[name].to_series()  # slow path, never expected
        return out if index is None else out[index]

    def n_values(self, name: str) -> int:
        """How many provisional codes (besides 0) a sparse field has."""
        return len(self.tokens[name].values) if name in self.tokens else self._n_made[name]

    def release(self) -> None:
        """Drop the per-value state of pass 1 (hash table, lookup tables, string tables)
        once the code -> id tables are built: pass 2 needs none of it."""
        self.keyed = None
        self._made = {n: [] for n in self._made}
        self._lazy_raw = {n: [] for n in self._lazy_raw}
        self._alive = []
        self.categories = {}

    def next_codes(self, name: str, present: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Provisional codes of new distinct values of a plain categorical field while
        ``lazy``: 0 where not ``present`` (missing), else the next codes in order; ``raw``:
        the keyed raw codes of the present ones (their text, decoded when needed)."""
        assert self.lazy
        codes = np.zeros(len(present), dtype=np.int32)
        k = int(np.count_nonzero(present))
        start = self._n_made[name] + 1
        codes[present] = np.arange(start, start + k, dtype=np.int32)
        self._lazy_raw[name].append(raw.astype(np.int32))
        self._n_made[name] += k
        return codes

    def _materialize(self) -> None:
        """Leave ``lazy`` before a generic block: load each plain categorical field's values,
        in code order, into its (empty) Categories table so Polars gives them the same codes."""
        if not self.lazy:
            return
        for f in self.sparse:
            if f.type != "categorical" or f.derive is not None or self._n_made[f.name] == 0:
                continue
            values = self.values(f.name)
            self._made[f.name] = [(np.arange(1, len(values) + 1, dtype=np.int32), values)]
            self._lazy_raw[f.name] = []
            got = values.cast(pl.Categorical(self.categories[f.name])).to_physical().to_numpy()
            if not np.array_equal(got, np.arange(len(values))):
                raise RuntimeError(f"{f.name}: category codes out of order")  # never expected
        self.lazy = False

    def record_categories(
        self, name: str, codes: np.ndarray, text: pl.Series | Callable[[np.ndarray], pl.Series]
    ) -> None:
        """Remember the strings of categories first coded in ``codes`` (reading them back from
        a ``Categories`` object goes through Python one value at a time).

        Args:
            name: the field.
            codes: provisional codes just made.
            text: the strings of ``codes`` (a Series aligned with them), or a function giving
                the strings at some rows (called for one row per new code).
        """
        new = codes > self._n_made[name]
        if not new.any():
            return
        if isinstance(text, pl.Series):  # few rows (new distinct raw values): keep them all
            self._made[name].append((codes[new], text.filter(pl.Series(new))))
            self._n_made[name] = int(codes.max())
            return
        fresh, first = np.unique(codes[new], return_index=True)
        self._made[name].append((fresh, text(np.flatnonzero(new)[first]).cast(pl.String)))
        self._n_made[name] = int(fresh[-1])

    # --- expressions -------------------------------------------------------------------
    def token_string(self, f: FeatureConfig, src: pl.Expr | None = None) -> pl.Expr:
        """The categorical token of ``f`` from its raw column (or ``src``)."""
        src = pl.col(f.column) if src is None else src
        if f.derive == "hour_of_day":
            return src.str.slice(6, 2)
        if f.derive == "weekday":
            date = src.str.slice(0, 6).str.strptime(pl.Date, "%y%m%d", strict=False)
            return date.dt.weekday().cast(pl.String)
        return src

    def code_expr(self, f: FeatureConfig, src: pl.Expr | None = None) -> pl.Expr:
        """int32 provisional code of a scalar categorical field (0 = missing)."""
        cat = pl.Categorical(self.categories[f.name])
        return self.token_string(f, src).cast(cat).to_physical().cast(pl.Int32).add(1).fill_null(0)

    def _numeric_sources(self) -> list[str]:
        out: list[str] = []
        for f in self.config.features:
            if f.type == "numeric" and f.column not in out:
                out.append(f.column)
        return out

    def _derived_sources(self) -> list[str]:
        out: list[str] = []
        for f in self.config.features:
            if f.derive is not None and f.column not in out:
                out.append(f.column)
        return out

    # --- apply ---------------------------------------------------------------------------
    def prepare(self, table: RawTable) -> RawTable:
        """Work on a block that needs no state of the plan (run ahead in the reader thread)."""
        return self.keyed.prepare(table) if self.keyed is not None else table

    def code(self, table: RawTable) -> RawTable:
        """Code a prepared keyed block's values to raw codes (``KeyedCoder.code``): stateful,
        in block order, and free to run ahead of ``apply`` in a thread of its own."""
        return self.keyed.code(table) if self.keyed is not None else table

    def apply(self, table: RawTable, bad: BadRows, path: str) -> CodedBlock:
        """Validate and code one block; bad rows are reported to ``bad`` and dropped.

        A keyed block (``RawTable.keys``) is coded through lookup tables (``KeyedCoder``);
        otherwise, or when it has bad values, one Polars ``select`` (parallel over columns)
        parses numbers and codes strings, and the checks and the numeric bucket run in numpy.
        """
        if (table.keys is not None or table.raw is not None) and self.keyed is not None:
            coded = self.keyed.apply(table)
            if coded is not None:
                return CodedBlock(*coded, rows=table.rows)
        self._materialize()
        frame = blank_to_null(table.frame)
        nums, derived = self._numeric_sources(), self._derived_sources()
        ranges = [number_range([f for f in self.config.features if f.column == c]) for c in nums]
        scalar = [f for f in self.sparse if f.type == "categorical"]
        exprs = [pl.col(self.config.label).cast(pl.Float64, strict=False).alias("_label")]
        exprs += [pl.col(c).cast(pl.Float64, strict=False).alias(f"_v{i}") for i, c in enumerate(nums)]
        exprs += [pl.col(c).is_null().alias(f"_n{i}") for i, c in enumerate(nums)]
        exprs += [bad_timestamp(pl.col(c)).alias(f"_t{i}") for i, c in enumerate(derived)]
        exprs += [self.code_expr(f).alias(f"_c_{f.name}") for f in scalar]
        out = frame.select(exprs)
        label = out.get_column("_label").to_numpy()
        values = [out.get_column(f"_v{i}").to_numpy() for i in range(len(nums))]  # NaN = null
        nulls = [out.get_column(f"_n{i}").to_numpy() for i in range(len(nums))]
        flags = [(label != 0) & (label != 1)]
        flags += [out_of_range(values[i], ~nulls[i], lo, hi) for i, (lo, hi, _) in enumerate(ranges)]
        flags += [out.get_column(f"_t{i}").to_numpy() for i in range(len(derived))]
        is_bad = np.logical_or.reduce(flags)
        if is_bad.any():
            names = [self.config.label, *nums, *derived]
            wants = ["a 0/1 label"] + [w for _, _, w in ranges] + ["a YYMMDDHH timestamp"] * len(derived)
            self._report(table, np.stack(flags, axis=1), names, wants, bad, path)
            return self.apply(table.drop(is_bad), bad, path)
        n = len(frame)
        codes = np.empty((n, self.width), dtype=np.int32)
        for f in scalar:
            fcodes = out.get_column(f"_c_{f.name}").to_numpy()
            self.record_categories(
                f.name, fcodes, lambda rows, f=f: frame[rows].select(self.token_string(f)).to_series()
            )
            codes[:, self.slices[f.name].start] = fcodes
        dense = np.empty((n, len(self.dense)), dtype=np.float32)
        for f in self.config.features:
            if f.type == "numeric":
                j = nums.index(f.column)
                if f.is_dense:
                    dense[:, self.dense.index(f)] = values[j]
                else:
                    tokens = self.tokens[f.name].encode(bucket_numpy(values[j]))
                    codes[:, self.slices[f.name].start] = tokens
            elif f.type == "sequence":
                codes[:, self.slices[f.name]] = self._sequence_codes(frame, f)
        return CodedBlock(codes, dense, label.astype(np.float32), table.rows)

    def _sequence_codes(self, frame: pl.DataFrame, f: FeatureConfig) -> np.ndarray:
        assert f.separator is not None and f.max_len is not None
        lists = frame.get_column(f.column).str.split(f.separator, literal=True)
        lists = lists.list.eval(pl.element().filter(pl.element() != "")).list.head(f.max_len)
        lens = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
        flat = lists.explode().drop_nulls()
        cat = pl.Categorical(self.categories[f.name])
        ids = flat.cast(cat).to_physical().cast(pl.Int32).to_numpy() + 1
        self.record_categories(f.name, ids, flat.gather)
        out = np.zeros((len(frame), f.max_len), dtype=np.int32)
        rows = np.repeat(np.arange(len(frame)), lens)
        starts = np.cumsum(lens) - lens
        pos = np.arange(len(ids)) - np.repeat(starts, lens)
        out[rows, pos] = ids
        return out

    def _report(
        self,
        table: RawTable,
        flags: np.ndarray,
        names: list[str],
        wants: list[str],
        bad: BadRows,
        path: str,
    ) -> None:
        idx = np.flatnonzero(flags.any(axis=1))
        reasons = []
        for r in idx[: bad.max_examples]:
            i = int(np.argmax(flags[r]))
            value = table.frame[int(r), names[i]]
            reasons.append(f"column {names[i]}: {value!r} is not {wants[i]}")
        bad.add(path, table.lines[idx], reasons)
