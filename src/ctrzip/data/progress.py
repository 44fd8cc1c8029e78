"""Encoding progress on stderr (bytes read, rows/s, ETA) and read-ahead of input blocks."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


class EncodeProgress:
    """Two bars: pass 1 (read, by bytes) and pass 2 (write, by rows).

    Args:
        enabled: False makes every method a no-op.
        total_bytes: input size.
    """

    def __init__(self, enabled: bool, total_bytes: int) -> None:
        self.enabled = enabled
        self.rows = 0
        self._t0 = time.perf_counter()
        self._progress: Progress | None = None
        self._read: TaskID | None = None
        self._write: TaskID | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._read = self._progress.add_task("read", total=total_bytes, rate="")

    def __enter__(self) -> EncodeProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, nbytes: int, rows: int) -> None:
        self.rows += rows
        if self._progress is not None and self._read is not None:
            rate = self.rows / max(time.perf_counter() - self._t0, 1e-9)
            self._progress.update(self._read, advance=nbytes, rate=f"{self.rows:,} rows, {rate:,.0f} rows/s")

    def start_write(self, rows: int) -> None:
        if self._progress is not None:
            self._write = self._progress.add_task("write", total=max(rows, 1), rate=f"{rows:,} rows")

    def advance_write(self, rows: int) -> None:
        if self._progress is not None and self._write is not None:
            self._progress.update(self._write, advance=rows)


T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Produce ``items`` in a background thread, ``depth`` ahead.

    Why: parsing (Polars, GIL released) then overlaps with the single-threaded numpy work
    on the previous block. Exceptions are re-raised in the consumer; abandoning the
    iterator stops the producer.
    """
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(item)
            q.put(_DONE)
        except BaseException as err:  # handed to the consumer
            q.put(err)

    thread = threading.Thread(target=run, daemon=True, name="ctrzip-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
