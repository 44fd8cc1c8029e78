"""Time a window of training steps from outside ``Trainer.fit``, warm-up excluded.

``StepClock`` wraps any loader the trainer accepts (``len``, ``set_epoch``, iteration). The
trainer asks for batch ``i`` only after step ``i - 1`` has finished, so the clock read when
batch ``start`` is requested and when batch ``stop`` is requested brackets exactly the steps
``start .. stop-1`` (their data loading included). ``sync`` (``torch.cuda.synchronize`` on GPU)
runs before each read so queued kernels are counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any


class StepClock:
    """Loader wrapper that records the wall time of steps ``start .. stop-1``.

    Args:
        loader: the wrapped loader (a ``BatchLoader`` or anything with len/iter/set_epoch).
        start: index of the first timed step (the steps before it are warm-up).
        stop: index one past the last timed step.
        sync: called before each clock read (device synchronization), or None.
    """

    def __init__(self, loader: Any, start: int, stop: int, sync: Callable[[], None] | None = None) -> None:
        if not 0 <= start < stop:
            raise ValueError(f"need 0 <= start < stop, got {start}, {stop}")
        self.loader, self.start, self.stop, self.sync = loader, start, stop, sync
        self.t_start: float | None = None
        self.t_stop: float | None = None
        self.marks: list[float] = []  # clock at each request in [start, stop]; per-step only without sync

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def _read(self) -> float:
        if self.sync is not None:
            self.sync()
        return time.perf_counter()

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.loader):
            if i == self.start:
                self.t_start = self._read()
                self.marks = [self.t_start]
            elif i == self.stop:
                self.t_stop = self._read()
                self.marks.append(self.t_stop)
            elif self.start < i < self.stop:
                self.marks.append(time.perf_counter())
            yield batch

    @property
    def seconds(self) -> float:
        if self.t_start is None or self.t_stop is None:
            raise RuntimeError("the timed window was not reached (loader too short or max_steps too small)")
        return self.t_stop - self.t_start

    @property
    def step_seconds(self) -> list[float]:
        """Duration of each timed step; meaningful only when no device queue runs ahead (CPU)."""
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]

    @property
    def steps(self) -> int:
        return self.stop - self.start


class ListLoader:
    """A fixed list of batches served as a loader (for step-only timing without data loading)."""

    def __init__(self, batches: Sequence[Any]) -> None:
        self.batches = list(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        return iter(self.batches)
