"""Delimited text readers: raw Criteo TSV, raw Avazu CSV, generic CSV with a header.

Column-count errors are found by one ``bytes.count`` of the separator per block (C speed)
when the block has no quotes; a block whose count is off, that has quotes, or that Polars
rejects is checked line by line (vectorized: blank lines, invalid UTF-8, column counts,
unclosed quotes) and its remaining lines are parsed in halves until the lines Polars
rejects are found, so every bad line becomes a bad row with its reason.
Blocks of short plain fields are handed over as exact keys instead (``readers.fields``) and
parsed by Polars only if the encoder needs the strings (bad values).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl

from ctrzip.data.readers.base import BadRows, DataFormatError, RawTable, Reader
from ctrzip.data.readers.fields import field_keys
from ctrzip.data.readers.sniff import describe_header, describe_start
from ctrzip.data.readers.text import (
    count_lines,
    invalid_utf8,
    iter_blocks,
    keep_lines,
    line_spans,
    other_magic,
    read_first_line,
)

KEYED_BLOCK_BYTES = 8 << 20
CRITEO_COLUMNS = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]


class DelimitedReader(Reader):
    """A separator-delimited text file, with a header line or fixed column names.

    Args:
        path: the file (plain or compressed, see ``readers.text``).
        separator: one character.
        names: column names when the file has no header; None reads them from line 1
            (names are stripped of surrounding whitespace).
        quote: quote character (None: quotes are ordinary characters).
        block_bytes: approximate bytes per block.
        encoding: ``utf-8`` or ``latin-1`` (transcoded to UTF-8 as it is read).

    Raises:
        DataFormatError: empty file, unreadable or empty header, duplicate column names.
    """

    def __init__(
        self,
        path: str | Path,
        separator: str = ",",
        names: list[str] | None = None,
        quote: str | None = '"',
        block_bytes: int = 32 << 20,
        encoding: str = "utf-8",
    ) -> None:
        super().__init__(path, block_bytes)
        self.separator, self.quote, self.encoding = separator, quote, encoding
        if names is None:
            line, self._offset = read_first_line(self.path)
            if self._offset == 0:
                raise DataFormatError(f"{self.path}: file is empty (no header line)")
            what = other_magic(line)
            if what is not None:
                raise DataFormatError(f"{self.path}: the file is {what}")
            try:
                text = line.decode(encoding)
            except UnicodeDecodeError as err:
                raise DataFormatError(
                    f"{self.path}:1: header is not UTF-8 text (byte 0x{line[err.start]:02x} at "
                    f"position {err.start}); set encoding: latin-1 if the file is Latin-1"
                ) from None
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
        self._header = self._first_line == 2

    @property
    def columns(self) -> list[str]:
        return list(self._names)

    @property
    def has_header(self) -> bool:
        return self._header

    def require(self, columns: list[str]) -> None:
        try:
            super().require(columns)
        except DataFormatError as err:
            hint = describe_header(self._names, self.separator) if self._header else None
            raise DataFormatError(f"{err}; {hint}" if hint else str(err)) from None

    def count_rows(self) -> int:
        return count_lines(self.path, self._offset)

    def describe(self) -> str:
        return describe_start(self.path, self.separator, self._names, self._header, self.encoding)

    def _parse(self, data: bytes, columns: list[str]) -> pl.DataFrame:
        return pl.read_csv(
            data,
            has_header=False,
            separator=self.separator,
            quote_char=self.quote,
            schema={n: pl.String for n in self._names},
            columns=sorted(self._names.index(c) for c in columns),
        )

    def _try_parse(self, data: bytes, columns: list[str], n_lines: int) -> pl.DataFrame | None:
        """The parsed block, or None when Polars rejects it or finds another row count."""
        try:
            frame = self._parse(data, columns)
        except pl.exceptions.PolarsError:
            return None
        return frame if len(frame) == n_lines else None

    def iter_tables(
        self, columns: list[str], bad: BadRows, key_columns: list[str] | None = None
    ) -> Iterator[RawTable]:
        self.require(columns)
        self.require(list(key_columns or []))
        key_idx = None if key_columns is None else [self._names.index(c) for c in key_columns]
        sep = self.separator.encode()
        quote = None if self.quote is None else self.quote.encode()
        want = len(self._names) - 1
        row0 = 0
        # keyed blocks: smaller, so that the per-field arrays (several times the text) stay
        # under glibc's mmap threshold and their memory is reused rather than faulted in
        size = self.block_bytes if key_idx is None else min(self.block_bytes, KEYED_BLOCK_BYTES)
        for blk in iter_blocks(self.path, size, self._offset, self._first_line, self.encoding):
            lines = np.arange(blk.first_line, blk.first_line + blk.n_lines, dtype=np.int64)
            rows = np.arange(row0, row0 + blk.n_lines, dtype=np.int64)
            row0 += blk.n_lines
            data, frame = blk.data, None
            if key_idx is not None:
                keys = field_keys(data, self.separator, blk.n_lines, len(self._names), key_idx, self.quote)
                if keys is not None:
                    parse = functools.partial(self._parse, data, columns)
                    yield RawTable(None, lines, rows, blk.nbytes, keys=keys, parse=parse)
                    continue
            # the separator count proves the column counts only when no quote can hide one
            plain = quote is None or quote not in data
            if plain and data.count(sep) == want * blk.n_lines and b"\n\n" not in data and data[:1] != b"\n":
                frame = self._try_parse(data, columns, blk.n_lines)
            if frame is None:
                frame, keep = self._parse_lines(data, lines, columns, bad)
                lines, rows = lines[keep], rows[keep]
            yield RawTable(frame, lines, rows, blk.nbytes)

    def _empty(self, columns: list[str]) -> pl.DataFrame:
        return pl.DataFrame(schema={c: pl.String for c in columns})

    def _parse_lines(
        self, data: bytes, lines: np.ndarray, columns: list[str], bad: BadRows
    ) -> tuple[pl.DataFrame, np.ndarray]:
        """Parse a block line by line where needed: report bad lines, return the frame of the
        others and their keep mask.

        Lines are checked (vectorized: blank, UTF-8, column count outside quotes, an unclosed
        quote), the rest parsed by Polars at once; if Polars rejects that, halves are parsed
        until the rejected lines are found (a few parses per bad line).
        """
        starts, ends = line_spans(data)
        is_bad, why = self._check_lines(data, starts, ends)
        rejected: dict[int, str] = {}
        frames: list[pl.DataFrame] = []

        def parse(idx: np.ndarray) -> None:
            mask = np.zeros(len(starts), dtype=bool)
            mask[idx] = True
            frame = self._try_parse(keep_lines(data, starts, ends, mask), columns, len(idx))
            if frame is not None:
                frames.append(frame)
            elif len(idx) == 1:
                rejected[int(idx[0])] = self._rejected(data[starts[idx[0]] : ends[idx[0]]])
            else:
                parse(idx[: len(idx) // 2])
                parse(idx[len(idx) // 2 :])

        if not is_bad.all():
            parse(np.flatnonzero(~is_bad))
        is_bad[list(rejected)] = True
        idx = np.flatnonzero(is_bad)
        reasons = [rejected.get(int(i)) or why(int(i)) for i in idx[: bad.max_examples]]
        bad.add(self.path, lines[idx], reasons)
        frame = pl.concat(frames) if frames else self._empty(columns)
        return frame, ~is_bad

    def _check_lines(
        self, data: bytes, starts: np.ndarray, ends: np.ndarray
    ) -> tuple[np.ndarray, Callable[[int], str]]:
        """``(is_bad [n_lines], why(line index) -> reason)``: blank lines, invalid UTF-8, a
        wrong column count (separators inside quotes do not count), an unclosed quote."""
        width = ends - starts
        buf = np.frombuffer(data, dtype=np.uint8)
        cr = np.zeros(len(ends), dtype=bool)
        cr[width > 0] = buf[ends[width > 0] - 1] == 13
        blank = (width - cr) == 0
        seps = np.flatnonzero(buf == ord(self.separator))
        raw_cols = np.searchsorted(seps, ends) - np.searchsorted(seps, starts) + 1  # ignoring quotes
        ncols, odd = raw_cols, np.zeros(len(ends), dtype=bool)
        if self.quote is not None:
            quotes = np.flatnonzero(buf == ord(self.quote))
            if len(quotes):
                # a separator is inside quotes when an odd number of quotes precede it on its
                # line (an escaped quote "" adds two): count only the others
                at_start = np.searchsorted(quotes, starts)
                odd = (np.searchsorted(quotes, ends) - at_start) % 2 == 1
                line_of = np.searchsorted(ends, seps)
                outside = (np.searchsorted(quotes, seps) - at_start[line_of]) % 2 == 0
                ncols = np.bincount(line_of[outside], minlength=len(ends)) + 1
        broken = invalid_utf8(data, starts, ends)
        need = len(self._names)
        is_bad = blank | odd | (ncols != need)
        is_bad[list(broken)] = True

        def why(i: int) -> str:
            if i in broken:
                line, pos = data[starts[i] : ends[i]], broken[i]
                col = line[:pos].count(self.separator.encode())
                where = f" in column {self._names[col]}" if col < need else ""
                return (
                    f"invalid UTF-8 byte 0x{line[pos]:02x}{where} (byte {pos + 1} of the line); "
                    "set encoding: latin-1 if the file is Latin-1 text"
                )
            if blank[i]:
                return "empty line"
            if odd[i] and raw_cols[i] == need:
                return self._rejected(b"")
            if odd[i]:
                return (
                    "a quoted field spans lines (a newline inside quotes, or an unclosed quote); "
                    "every row must be one line"
                )
            return self._reason(int(ncols[i]))

        return is_bad, why

    def _reason(self, got: int) -> str:
        need = len(self._names)
        if got < need:
            return f"expected {need} columns, got {got} (first missing column: {self._names[got]})"
        return f"expected {need} columns ({self._names[0]}..{self._names[-1]}), got {got}"

    def _rejected(self, line: bytes) -> str:
        """Why Polars rejects a line whose column count is right."""
        if self.quote is not None and (not line or self.quote.encode() in line):
            return (
                f"misplaced quote {self.quote!r}: a quoted field must be quoted whole, with inner "
                "quotes doubled"
            )
        return "the CSV parser rejects this line"


def criteo_reader(path: str | Path, block_bytes: int = 32 << 20, encoding: str = "utf-8") -> DelimitedReader:
    """Kaggle Criteo file: tab-separated, no header, label + I1..I13 + C1..C26.

    The raw file has no quotes; a re-export that quotes cells (pandas, Spark) reads the
    same, with ``""`` as a missing value.
    """
    return DelimitedReader(path, "\t", CRITEO_COLUMNS, '"', block_bytes, encoding)


def csv_reader(
    path: str | Path, separator: str = ",", block_bytes: int = 32 << 20, encoding: str = "utf-8"
) -> DelimitedReader:
    """CSV with a header line (raw Avazu and generic CSV)."""
    return DelimitedReader(path, separator, None, '"', block_bytes, encoding)
