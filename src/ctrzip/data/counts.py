"""Training-split frequencies, vocabularies and the code -> id lookup of each field.

Id layout (docs: spec/DATA.md): 0 = padding/missing, 1..n = values kept by ``min_count`` in
descending training frequency (ties by value), n + 1 = OOV (rare or unseen). Counts per id are
what a pass over the encoded training split observes (OOV counts the rare values mapped to it,
id 0 counts missing values and sequence padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl


class CodeCounter:
    """Per-field bincounts of provisional codes over many blocks, one ``bincount`` per block
    (``counts[name]`` may end with zeros past the highest code).

    Args:
        widths: sparse columns per field, in column order (a sequence field spans several).
    """

    def __init__(self, widths: dict[str, int]) -> None:
        self.widths = dict(widths)
        self.counts = {name: np.zeros(1, dtype=np.int64) for name in widths}
        self._field_of_col = np.repeat(np.arange(len(widths)), list(widths.values()))

    def add(self, codes: np.ndarray) -> None:
        """Count ``codes`` [n, S] (every column of every field)."""
        if codes.size == 0:
            return
        sizes = np.zeros(len(self.widths), dtype=np.int64)
        np.maximum.at(sizes, self._field_of_col, codes.max(axis=0).astype(np.int64) + 1)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        flat = (codes + starts[self._field_of_col].astype(codes.dtype)).ravel()
        total = np.bincount(flat, minlength=int(sizes.sum()))
        for (name, c), a, n in zip(self.counts.items(), starts, sizes, strict=True):
            if n > len(c):  # ~1.25x steps: a copy per block of a field's whole counts is slow
                grown = np.zeros(max(n, len(c) + len(c) // 4 + 1024), dtype=np.int64)
                grown[: len(c)] = c
                c = self.counts[name] = grown
            c[:n] += total[a : a + n]


@dataclass
class Moments:
    """Training statistics of a dense field (non-missing values), in float64."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    lo: float = np.inf
    hi: float = -np.inf

    def add(self, x: np.ndarray) -> None:
        x = x[~np.isnan(x)].astype(np.float64)
        if x.size:
            self.n += x.size
            self.total += float(x.sum())
            self.total_sq += float(np.square(x).sum())
            self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))

    def normalizer(self, kind: str) -> dict[str, Any]:
        """``(x - shift) / scale``; a constant or empty field gets scale 1."""
        if self.n == 0:
            return {"kind": kind, "shift": 0.0, "scale": 1.0}
        if kind == "minmax":
            span = self.hi - self.lo
            return {"kind": kind, "shift": self.lo, "scale": span if span > 0 else 1.0}
        mean = self.total / self.n
        var = max(self.total_sq / self.n - mean * mean, 0.0)
        return {"kind": kind, "shift": mean, "scale": float(np.sqrt(var)) if var > 0 else 1.0}


def build_vocab(
    values: pl.Series | list[Any], counts: np.ndarray, min_count: int | None, *, ordered: bool = False
) -> Any:
    """Values with ``count >= min_count`` (None: all), by descending count then ascending
    value (id order); with ``ordered`` also their positions in ``values`` (int64)."""
    df = pl.DataFrame({"v": values, "c": np.asarray(counts, dtype=np.int64)}).with_row_index("i")
    if min_count is not None:
        df = df.filter(pl.col("c") >= min_count)
    kept = df.sort(["c", "v"], descending=[True, False])
    vocab = kept.get_column("v").to_list()
    return (vocab, kept.get_column("i").to_numpy().astype(np.int64)) if ordered else vocab


def vocab_frame(vocab: list[Any], dtype: Any) -> pl.DataFrame:
    """``{"v": value, "id": 1..n}``: the lookup side of ``category_lut``, built once per field
    where many small blocks are coded with one vocabulary (``ctrzip predict`` and ``serve``)."""
    return pl.DataFrame(
        {"v": pl.Series(vocab, dtype=dtype), "id": np.arange(1, len(vocab) + 1, dtype=np.int32)}
    )


def category_lut(values: pl.Series, vocab: list[Any] | pl.DataFrame) -> np.ndarray:
    """Provisional code (0 = missing, k + 1 = ``values[k]``) -> final id (unknown -> OOV).

    ``vocab``: the kept values in id order, or their ``vocab_frame``; with a frame only the
    vocabulary entries among ``values`` take part in the join (a small block against a large
    vocabulary then costs a scan, not a hash table of the whole vocabulary).
    """
    oov = len(vocab) + 1
    if len(values) == 0:
        return np.zeros(1, dtype=np.int32)
    if isinstance(vocab, pl.DataFrame):
        cats = pl.DataFrame({"v": values.cast(vocab.schema["v"])})
        ids = vocab.filter(pl.col("v").is_in(cats.get_column("v").implode()))
    else:
        dtype = pl.Int64 if values.dtype.is_integer() else pl.String
        cats = pl.DataFrame({"v": values.cast(dtype)})
        ids = vocab_frame(vocab, dtype)
    joined = cats.join(ids, on="v", how="left", maintain_order="left").get_column("id").fill_null(oov)
    return np.concatenate([[0], joined.to_numpy().astype(np.int32)])


def id_counts(ids: np.ndarray, weights: np.ndarray, vocab_size: int) -> np.ndarray:
    """Per-id totals of provisional counts (``weights``) mapped through ``ids``; exact int64."""
    w = np.asarray(weights, dtype=np.float64)  # exact below 2**53 rows
    return np.rint(np.bincount(np.asarray(ids), weights=w, minlength=vocab_size)).astype(np.int64)
