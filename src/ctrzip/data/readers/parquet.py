"""Parquet reader: record batches of the requested columns, cast to strings.

Why strings: the encoder validates and transforms every format the same way; typed parquet
columns simply never produce a non-number.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from ctrzip.data.readers.base import BadRows, DataFormatError, RawTable, Reader


class ParquetReader(Reader):
    """A parquet file read in row batches; "line" numbers are 1-based row numbers."""

    def __init__(self, path: str | Path, block_bytes: int = 32 << 20) -> None:
        super().__init__(path, block_bytes)
        try:
            self._file = pq.ParquetFile(self.path)
        except Exception as err:  # pyarrow raises several types for a non-parquet file
            raise DataFormatError(f"{self.path}: not a readable parquet file ({err})") from None
        meta = self._file.metadata
        self._rows = meta.num_rows
        row_bytes = max(1, meta.serialized_size // max(1, self._rows)) if self._rows else 1
        self._batch = int(np.clip(block_bytes // max(row_bytes, 64), 1024, 1 << 20))
        if self._rows == 0:
            raise DataFormatError(f"{self.path}: file has no rows")

    @property
    def columns(self) -> list[str]:
        return list(self._file.schema_arrow.names)

    def count_rows(self) -> int:
        return int(self._rows)

    def describe(self) -> str:
        return ""  # a readable parquet file has no text oddities to report

    def iter_tables(
        self, columns: list[str], bad: BadRows, key_columns: list[str] | None = None
    ) -> Iterator[RawTable]:
        self.require(columns)
        row0 = 0
        total = self.total_bytes
        for batch in self._file.iter_batches(batch_size=self._batch, columns=columns):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            n = len(frame)
            rows = np.arange(row0, row0 + n, dtype=np.int64)
            row0 += n
            broken = self._invalid_text(frame)
            frame = frame.select(self._as_text(frame, c) for c in columns)
            table = RawTable(frame, rows + 1, rows, int(total * n / self._rows))
            if broken is not None:
                is_bad, reasons = broken
                idx = np.flatnonzero(is_bad)
                bad.add(self.path, rows[idx] + 1, [reasons[int(i)] for i in idx[: bad.max_examples]])
                table = table.drop(is_bad)
            yield table

    def _as_text(self, frame: pl.DataFrame, column: str) -> pl.Expr:
        """``column`` as strings (binary: decoded, invalid UTF-8 -> null, reported by
        ``_invalid_text``); a type with no text form is an error naming the column."""
        dtype = frame.schema[column]
        if dtype == pl.Binary:
            return pl.col(column).map_elements(_utf8_or_none, return_dtype=pl.String)
        if dtype.is_nested() or dtype == pl.Object:
            raise DataFormatError(
                f"{self.path}: column {column} has type {dtype}; ctrzip reads parquet columns of "
                "numbers, strings or booleans (write a sequence as one separator-joined string)"
            )
        return pl.col(column).cast(pl.String)

    def _invalid_text(self, frame: pl.DataFrame) -> tuple[np.ndarray, dict[int, str]] | None:
        """Rows of binary columns that are not UTF-8 text: (mask, row -> reason)."""
        is_bad, reasons = np.zeros(len(frame), dtype=bool), {}
        for column, dtype in frame.schema.items():
            if dtype != pl.Binary:
                continue
            for i, value in enumerate(frame.get_column(column).to_list()):
                if value is not None and _utf8_or_none(value) is None and not is_bad[i]:
                    is_bad[i] = True
                    reasons[i] = (
                        f"column {column}: invalid UTF-8 bytes {value[:16]!r} (strings must be UTF-8)"
                    )
        return (is_bad, reasons) if is_bad.any() else None


def _utf8_or_none(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None
