"""Encoding progress (bytes, rows/s, ETA; drawn by ``ctrzip.progress``) and read-ahead of input blocks."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import TypeVar

from rich.progress import TaskID

from ctrzip.progress import ProgressBars


class EncodeProgress:
    """Encoding's two bars on the shared :class:`ctrzip.progress.ProgressBars`.

    Pass 1 (read) advances by bytes and shows rows and rows/s; pass 2 (write) by rows.

    Args:
        enabled: False makes every method a no-op.
        total_bytes: input size in bytes.
    """

    def __init__(self, enabled: bool, total_bytes: int) -> None:
        self.rows = 0
        self._t0 = time.perf_counter()
        self._bars = ProgressBars(enabled)
        self._total_bytes = total_bytes
        self._read: TaskID | None = None
        self._write: TaskID | None = None

    def __enter__(self) -> EncodeProgress:
        self._bars.__enter__()
        self._read = self._bars.add("read", self._total_bytes, unit="MB", per_step=1 / 2**20)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bars.__exit__(exc_type, exc, tb)

    def advance(self, nbytes: int, rows: int) -> None:
        self.rows += rows
        rate = self.rows / max(time.perf_counter() - self._t0, 1e-9)
        self._bars.advance(self._read, nbytes, status=f"{self.rows:,} rows, {rate:,.0f} rows/s")

    def start_write(self, rows: int) -> None:
        self._write = self._bars.add("write", max(rows, 1), unit="rows")

    def advance_write(self, rows: int) -> None:
        self._bars.advance(self._write, rows)


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
