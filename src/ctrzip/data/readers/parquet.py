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

    def iter_tables(
        self, columns: list[str], bad: BadRows, key_columns: list[str] | None = None
    ) -> Iterator[RawTable]:
        self.require(columns)
        row0 = 0
        total = self.total_bytes
        for batch in self._file.iter_batches(batch_size=self._batch, columns=columns):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            frame = frame.select(pl.col(c).cast(pl.String) for c in columns)
            n = len(frame)
            rows = np.arange(row0, row0 + n, dtype=np.int64)
            row0 += n
            yield RawTable(frame, rows + 1, rows, int(total * n / self._rows))
