"""Append-only prediction files (parquet or csv) that appear only once complete."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from ctrzip.errors import UserError

SUFFIXES = (".parquet", ".csv")


class OutputError(UserError):
    """A predictions file that cannot be written (exists, unknown suffix)."""


class PredictionWriter:
    """Writes ``[id_column], row, probability`` blocks to ``path`` (``.parquet`` or ``.csv``).

    Blocks go to ``path.tmp`` (parquet: one row group per block; csv: one header) and the file
    is renamed to ``path`` when the ``with`` block ends without an error; on an error the
    partial file is removed, so a predictions file is never half-written.

    Args:
        path: the output file.
        id_column: name of the pass-through id column, or None.
        overwrite: replace an existing ``path``.

    Raises:
        OutputError: ``path`` exists (and not ``overwrite``) or its suffix is not ``.parquet``/``.csv``.
    """

    def __init__(self, path: Path, id_column: str | None, overwrite: bool) -> None:
        if path.suffix.lower() not in SUFFIXES:
            raise OutputError(f"{path}: the output must end in .parquet or .csv")
        if path.exists() and not overwrite:
            raise OutputError(f"{path}: already exists; pass --overwrite (overwrite=True) to replace it")
        if not path.parent.is_dir():
            raise OutputError(f"{path.parent}: no such folder for the output")
        self.path, self.id_column = path, id_column
        self.tmp = path.with_name(path.name + ".tmp")
        self._parquet: pq.ParquetWriter | None = None
        self._csv = None
        self._wrote = False

    def __enter__(self) -> PredictionWriter:
        return self

    def frame(self, kept: pl.DataFrame, rows: np.ndarray, probs: np.ndarray) -> pl.DataFrame:
        cols = []
        if self.id_column:
            cols.append(kept.get_column(self.id_column).cast(pl.String))
        cols += [pl.Series("row", rows, dtype=pl.Int64), pl.Series("probability", probs, dtype=pl.Float64)]
        return pl.DataFrame(cols)

    def write(self, kept: pl.DataFrame, rows: np.ndarray, probs: np.ndarray) -> None:
        """Append one block: pass-through columns ``kept``, row indices int64 [n], float64 [n]."""
        frame = self.frame(kept, rows, probs)
        if self.path.suffix.lower() == ".parquet":
            table = frame.to_arrow()
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.tmp, table.schema)
            self._parquet.write_table(table)
        else:
            if self._csv is None:
                self._csv = open(self.tmp, "wb")  # noqa: SIM115  (closed in __exit__)
            frame.write_csv(self._csv, include_header=not self._wrote)
        self._wrote = True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for f in (self._parquet, self._csv):
            if f is not None:
                f.close()
        if exc_type is None and self._wrote:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
