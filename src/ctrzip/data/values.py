"""Value rules shared by the encoder's two coding paths (``columns`` and ``keyed``).

Why one module: the generic Polars path and the keyed fast path must agree on every value
(which numbers are accepted, how they are bucketed, which timestamps are valid), or the
same row would encode differently depending on the block it lands in.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ctrzip.data.config import FeatureConfig

TOKEN_MAX = float(np.iinfo(np.int32).max)  # bucket tokens are int32
FLOAT32_MAX = float(np.finfo(np.float32).max)  # dense values are stored as float32


def bucket_numpy(values: np.ndarray) -> np.ndarray:
    """Criteo-standard bucket: v > 2 -> floor(ln(v)^2), else int(v) (truncation); NaN stays NaN.

    Args:
        values: float [n] (any shape); values below ``-TOKEN_MAX`` are rejected upstream
            (``number_range``), so the final clip never changes an accepted value.
    Returns:
        float64, same shape: integral tokens (NaN = missing).
    """
    v = np.asarray(values, dtype=np.float64)
    big = v > 2
    out = np.trunc(v)
    np.log(v, where=big, out=out)
    np.square(out, where=big, out=out)
    np.floor(out, where=big, out=out)
    return np.clip(out, -TOKEN_MAX, TOKEN_MAX, out=out)


def number_range(fields: list[FeatureConfig]) -> tuple[float, float, str]:
    """``(lo, hi, wanted)``: the raw numbers every numeric field in ``fields`` can store.

    A dense field stores float32 (|v| <= 3.4e38); a bucketed field an int32 token (v >=
    -2**31 + 1; large values shrink through the log, so no upper bound). Several fields
    may read one raw column: the range is their intersection. ``wanted`` describes it
    for error messages (``'1e39' is not <wanted>``).
    """
    lo, hi = -np.inf, np.inf
    if any(f.is_dense for f in fields):
        lo, hi = -FLOAT32_MAX, FLOAT32_MAX
    if any(not f.is_dense for f in fields):
        lo = max(lo, -TOKEN_MAX)
    if hi < np.inf:
        return lo, hi, f"a finite number that fits float32 (|v| <= {FLOAT32_MAX:.4g})"
    return lo, hi, f"a finite number >= {-TOKEN_MAX:.0f} (bucket tokens are int32)"


def out_of_range(x: np.ndarray, present: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """bool [n]: present values that are not numbers within ``[lo, hi]`` (NaN and inf fail)."""
    with np.errstate(invalid="ignore"):
        return present & ~((x >= lo) & (x <= hi))


def bad_timestamp(src: pl.Expr) -> pl.Expr:
    """True where a present value is not a valid ``YYMMDDHH`` timestamp."""
    date = src.str.slice(0, 6).str.strptime(pl.Date, "%y%m%d", strict=False)
    hour = src.str.slice(6, 2).cast(pl.Int32, strict=False)
    ok = src.str.contains(r"^\d{8}$") & date.is_not_null() & (hour < 24)
    return (src.is_not_null() & ok.not_()).fill_null(True)


def blank_to_null(frame: pl.DataFrame) -> pl.DataFrame:
    """String columns with empty cells as null: a quoted empty cell (``""``, as written by
    ``csv.QUOTE_ALL``, pandas or Spark) and an empty string in parquet mean missing, exactly
    like an unquoted empty cell."""
    cols = [c for c, t in frame.schema.items() if t == pl.String]
    if not cols:
        return frame
    return frame.with_columns(
        pl.when(pl.col(c).str.len_bytes() == 0).then(None).otherwise(pl.col(c)).alias(c) for c in cols
    )
