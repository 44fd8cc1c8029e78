"""What every reader yields (string columns plus line numbers) and the bad-row policy.

Why strings: validating numbers vectorized after the read (``cast(..., strict=False)`` and
comparing nulls) is what lets a bad row be found without a per-row Python loop, and lets the
error name the file, the line and the column.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from ctrzip.data.readers.errors import BadRowError, DataFormatError
from ctrzip.data.readers.sniff import describe_start

__all__ = ["BadRowError", "BadRows", "DataFormatError", "RawTable", "Reader"]


class RawTable:
    """One block of raw rows.

    Args:
        frame: the requested columns as ``pl.String`` (null = missing), rows in file order;
            None when ``parse`` builds it on first use.
        lines: int64 [n], 1-based line number of each row (row number for parquet).
        rows: int64 [n], 0-based data-row index in the input (bad rows counted too), the key
            of the random split.
        nbytes: input bytes this block consumed (progress).
        keys: optional uint64 [n, k] exact keys of the ``key_columns`` asked of the reader
            (``ctrzip.data.readers.fields``); the encoder's fast path reads these instead.
        parse: builds ``frame`` when it is first needed (a keyed block rarely needs it).

    ``hashes`` (uint64, like ``keys``) is left for the encoder to fill ahead of time,
    ``salted`` says that it has prepared ``keys`` in place, ``raw`` (int32, like ``keys``)
    holds their codes once coded and ``coded`` the range of codes the block created.
    """

    def __init__(
        self,
        frame: pl.DataFrame | None,
        lines: np.ndarray,
        rows: np.ndarray,
        nbytes: int = 0,
        *,
        keys: np.ndarray | None = None,
        parse: Callable[[], pl.DataFrame] | None = None,
    ) -> None:
        if frame is None and parse is None:
            raise ValueError("RawTable needs a frame or a parse function")
        self._frame, self._parse = frame, parse
        self.lines, self.rows, self.nbytes, self.keys = lines, rows, nbytes, keys
        self.hashes: np.ndarray | None = None
        self.salted = False
        self.raw: np.ndarray | None = None
        self.coded = (0, 0)

    @property
    def frame(self) -> pl.DataFrame:
        if self._frame is None:
            assert self._parse is not None
            self._frame, self._parse = self._parse(), None
        return self._frame

    def drop(self, bad: np.ndarray) -> RawTable:
        keep = ~bad
        return RawTable(self.frame.filter(pl.Series(keep)), self.lines[keep], self.rows[keep], self.nbytes)


@dataclass
class BadRows:
    """Bad-row policy and tally: ``error`` raises at the first one, ``skip`` counts them.

    Args:
        policy: ``error`` or ``skip``.
        max_examples: how many ``file:line: reason`` examples to keep.

    ``notes`` says what a file whose first rows were bad looks like (``Reader.describe``).
    """

    policy: Literal["error", "skip"] = "error"
    max_examples: int = 10
    count: int = 0
    notes: list[str] = field(default_factory=list)  # what files with bad first rows look like
    _items: list[tuple[int, int, str]] = field(default_factory=list, repr=False)
    _files: dict[str, int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def examples(self) -> list[str]:
        """The first ``max_examples`` bad rows in input order, as ``file:line: reason``."""
        return [text for _, _, text in self._items]

    def add(self, path: Path | str, lines: np.ndarray, reasons: list[str]) -> None:
        """Record bad rows (``reasons`` may be shorter: one per first few lines), or raise."""
        if len(lines) == 0:
            return
        first = f"{path}:{int(lines[0])}: {reasons[0]}"
        if self.policy == "error":
            more = f" (and {len(lines) - 1} more bad rows in this block)" if len(lines) > 1 else ""
            raise BadRowError(f"{first}{more}; set on_bad_rows: skip to drop and count such rows")
        with self._lock:  # readers run in a prefetch thread, value checks in the main one
            self.count += len(lines)
            order = self._files.setdefault(str(path), len(self._files))
            for line, reason in zip(lines, reasons, strict=False):
                self._items.append((order, int(line), f"{path}:{int(line)}: {reason}"))
            self._items = sorted(self._items)[: self.max_examples]

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "count": self.count, "examples": self.examples, "notes": self.notes}


class Reader(abc.ABC):
    """A raw input file read in blocks of string columns.

    Args:
        path: the input file.
        block_bytes: approximate bytes per block.
    """

    def __init__(self, path: str | Path, block_bytes: int = 32 << 20) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataFormatError(f"{self.path}: input file not found")
        if self.path.stat().st_size == 0:
            raise DataFormatError(f"{self.path}: file is empty")
        self.block_bytes = block_bytes

    @property
    @abc.abstractmethod
    def columns(self) -> list[str]:
        """Column names the file provides."""

    @abc.abstractmethod
    def iter_tables(
        self, columns: list[str], bad: BadRows, key_columns: list[str] | None = None
    ) -> Iterator[RawTable]:
        """Yield blocks holding ``columns``; structurally bad rows go to ``bad``.

        ``key_columns`` (repeats allowed) asks for ``RawTable.keys`` where the reader can
        give them; readers that cannot ignore it.
        """

    @abc.abstractmethod
    def count_rows(self) -> int:
        """Data rows in the file (a cheap pass; needed by the sequential split)."""

    @property
    def has_header(self) -> bool:
        """Whether line 1 of the file is a header line (not a data row)."""
        return False

    def describe(self) -> str:
        """What the start of the file looks like (see ``readers.sniff``), '' if unremarkable."""
        return describe_start(self.path)

    @property
    def total_bytes(self) -> int:
        return self.path.stat().st_size

    def require(self, columns: list[str]) -> None:
        """Raise naming the file and the missing columns."""
        have = set(self.columns)
        missing = [c for c in columns if c not in have]
        if missing:
            raise DataFormatError(
                f"{self.path}: missing columns {missing} (the file has: {', '.join(self.columns)})"
            )
