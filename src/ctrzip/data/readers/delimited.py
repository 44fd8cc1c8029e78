"""Delimited text readers: raw Criteo TSV, raw Avazu CSV, generic CSV with a header.

Column-count errors are found by one ``bytes.count`` of the separator per block (C speed);
only a block whose count is off is split into lines (vectorized) to locate the bad ones.
Blocks of short plain fields are handed over as exact keys instead (``readers.fields``) and
parsed by Polars only if the encoder needs the strings (bad values).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from ctrzip.data.readers.base import BadRows, DataFormatError, RawTable, Reader
from ctrzip.data.readers.fields import field_keys
from ctrzip.data.readers.text import (
    count_byte_per_line,
    count_lines,
    iter_blocks,
    keep_lines,
    line_spans,
    read_first_line,
)

KEYED_BLOCK_BYTES = 8 << 20
CRITEO_COLUMNS = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]


class DelimitedReader(Reader):
    """A separator-delimited text file, with a header line or fixed column names.

    Args:
        path: the file.
        separator: one character.
        names: column names when the file has no header; None reads them from line 1.
        quote: quote character (None: quotes are ordinary characters, as in raw Criteo).
        block_bytes: approximate bytes per block.
    """

    def __init__(
        self,
        path: str | Path,
        separator: str = ",",
        names: list[str] | None = None,
        quote: str | None = '"',
        block_bytes: int = 32 << 20,
    ) -> None:
        super().__init__(path, block_bytes)
        self.separator, self.quote = separator, quote
        if names is None:
            line, self._offset = read_first_line(self.path)
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                raise DataFormatError(f"{self.path}:1: header is not UTF-8 text") from None
            names = next(csv.reader([text], delimiter=separator, quotechar=quote or '"'), [])
            names = [n.strip() for n in names]
            if not any(names):
                raise DataFormatError(f"{self.path}:1: empty header line")
            self._first_line = 2
        else:
            self._offset, self._first_line = 0, 1
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DataFormatError(f"{self.path}: duplicate column names {dup}")
        self._names = list(names)

    @property
    def columns(self) -> list[str]:
        return list(self._names)

    def count_rows(self) -> int:
        return count_lines(self.path, self._offset)

    def _parse(self, data: bytes, columns: list[str]) -> pl.DataFrame:
        return pl.read_csv(
            data,
            has_header=False,
            separator=self.separator,
            quote_char=self.quote,
            schema={n: pl.String for n in self._names},
            columns=sorted(self._names.index(c) for c in columns),
        )

    def iter_tables(
        self, columns: list[str], bad: BadRows, key_columns: list[str] | None = None
    ) -> Iterator[RawTable]:
        self.require(columns)
        self.require(list(key_columns or []))
        key_idx = None if key_columns is None else [self._names.index(c) for c in key_columns]
        sep = self.separator.encode()
        want = len(self._names) - 1
        row0 = 0
        # keyed blocks: smaller, so that the per-field arrays (several times the text) stay
        # under glibc's mmap threshold and their memory is reused rather than faulted in
        size = self.block_bytes if key_idx is None else min(self.block_bytes, KEYED_BLOCK_BYTES)
        for blk in iter_blocks(self.path, size, self._offset, self._first_line):
            lines = np.arange(blk.first_line, blk.first_line + blk.n_lines, dtype=np.int64)
            rows = np.arange(row0, row0 + blk.n_lines, dtype=np.int64)
            row0 += blk.n_lines
            data, frame = blk.data, None
            if key_idx is not None:
                keys = field_keys(data, self.separator, blk.n_lines, len(self._names), key_idx, self.quote)
                if keys is not None:
                    parse = functools.partial(self._parse, data, columns)
                    yield RawTable(None, lines, rows, len(data), keys=keys, parse=parse)
                    continue
            if data.count(sep) == want * blk.n_lines and b"\n\n" not in data and data[:1] != b"\n":
                try:
                    frame = self._parse(data, columns)
                except pl.exceptions.ComputeError:
                    frame = None
                if frame is not None and len(frame) != blk.n_lines:
                    frame = None
            if frame is None:
                keep = self._locate_bad(data, lines, bad)
                data, lines, rows = keep_lines(data, *line_spans(data), keep), lines[keep], rows[keep]
                frame = self._parse(data, columns) if len(lines) else self._empty(columns)
                if len(frame) != len(lines):
                    raise DataFormatError(
                        f"{self.path}: lines {lines[0]}-{lines[-1]}: rows do not match lines "
                        "(a quoted field with a newline inside?); such files are not supported"
                    )
            yield RawTable(frame, lines, rows, len(blk.data))

    def _empty(self, columns: list[str]) -> pl.DataFrame:
        return pl.DataFrame(schema={c: pl.String for c in columns})

    def _locate_bad(self, data: bytes, lines: np.ndarray, bad: BadRows) -> np.ndarray:
        """Mark lines with the wrong column count (or empty); report them; return the keep mask."""
        starts, ends = line_spans(data)
        width = ends - starts
        buf = np.frombuffer(data, dtype=np.uint8)
        cr = np.zeros(len(ends), dtype=bool)
        cr[width > 0] = buf[ends[width > 0] - 1] == 13
        blank = (width - cr) == 0
        ncols = count_byte_per_line(data, ord(self.separator), starts, ends) + 1
        if self.quote is not None:
            quoted = np.flatnonzero((ncols != len(self._names)) & ~blank)
            has_q = count_byte_per_line(data, ord(self.quote), starts[quoted], ends[quoted]) > 0
            for i in quoted[has_q]:
                text = data[starts[i] : ends[i]].decode("utf-8", errors="replace")
                ncols[i] = len(next(csv.reader([text], delimiter=self.separator, quotechar=self.quote)))
        is_bad = blank | (ncols != len(self._names))
        idx = np.flatnonzero(is_bad)
        reasons = [self._reason(int(ncols[i]), bool(blank[i])) for i in idx[: bad.max_examples]]
        bad.add(self.path, lines[idx], reasons)
        return ~is_bad

    def _reason(self, got: int, blank: bool) -> str:
        if blank:
            return "empty line"
        need = len(self._names)
        if got < need:
            return f"expected {need} columns, got {got} (first missing column: {self._names[got]})"
        return f"expected {need} columns ({self._names[0]}..{self._names[-1]}), got {got}"


def criteo_reader(path: str | Path, block_bytes: int = 32 << 20) -> DelimitedReader:
    """Raw Kaggle Criteo file: tab-separated, no header, label + I1..I13 + C1..C26, no quoting."""
    return DelimitedReader(path, "\t", names=CRITEO_COLUMNS, quote=None, block_bytes=block_bytes)


def csv_reader(path: str | Path, separator: str = ",", block_bytes: int = 32 << 20) -> DelimitedReader:
    """CSV with a header line (raw Avazu and generic CSV)."""
    return DelimitedReader(path, separator, names=None, quote='"', block_bytes=block_bytes)
