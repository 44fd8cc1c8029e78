"""Run an iterator in a background thread, a few items ahead of its consumer.

Batch preparation is numpy gathers and copies, which release the GIL, so on two cores the
next batches are built while the training step runs (or waits on the GPU).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()
_POLL_S = 0.05  # how often a blocked producer checks whether the consumer went away


class _Failed:
    def __init__(self, err: BaseException) -> None:
        self.err = err


def prefetched(make: Callable[[], Iterator[T]], depth: int, name: str = "ctrzip-prefetch") -> Iterator[T]:
    """Yield the items of ``make()`` in order, produced by a daemon thread ``depth`` items ahead.

    ``depth <= 0`` iterates ``make()`` in the calling thread. An exception raised by the
    producer is re-raised in the consumer at the position where it happened. Closing the
    returned generator (``break``, garbage collection) stops the producer and joins it.
    """
    if depth <= 0:
        yield from make()
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in make():
                if not put(item):
                    return
            put(_END)
        except BaseException as err:  # handed to the consumer, which re-raises it
            put(_Failed(err))

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.err
            yield item
    finally:
        stop.set()
        thread.join()
