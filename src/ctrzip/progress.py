"""The one progress helper: rich bars on stderr with a rate in units/s and an ETA.

Used by encoding (rows/s), synthetic generation, training (samples/s), calibration and MEC
code learning. Every method is a no-op when ``enabled`` is False (tests, logs, ``--no-progress``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

T = TypeVar("T")


class _Rate(ProgressColumn):
    """``units/s``: the task advances in steps; ``per_step`` units per step (e.g. batch size)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        speed = task.finished_speed or task.speed
        if not unit:
            return Text("")
        if not speed:
            return Text(f"- {unit}/s", style="progress.data.speed")
        rate = speed * float(task.fields.get("per_step", 1.0))
        return Text(f"{rate:,.0f} {unit}/s", style="progress.data.speed")


class ProgressBars:
    """A group of progress bars on stderr.

    Args:
        enabled: draw bars and print log lines; False makes every method a no-op.
        transient: remove the bars when the group closes.

    Example::

        with ProgressBars(True) as bars:
            task = bars.add("epoch 1", total=steps, unit="samples", per_step=batch_size)
            for _ in range(steps):
                bars.advance(task, status="loss 0.45")
    """

    def __init__(self, enabled: bool, *, transient: bool = False) -> None:
        self.enabled = enabled
        self._transient = transient
        self._progress: Progress | None = None

    def __enter__(self) -> ProgressBars:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _Rate(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(stderr=True),
                transient=self._transient,
            )
            self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def add(
        self,
        description: str,
        total: float | None,
        *,
        unit: str = "rows",
        per_step: float = 1.0,
        completed: float = 0,
        status: str = "",
    ) -> TaskID | None:
        """Add a bar of ``total`` steps; its rate shows ``per_step`` ``unit`` per step."""
        if self._progress is None:
            return None
        return self._progress.add_task(
            description, total=total, completed=completed, unit=unit, per_step=per_step, status=status
        )

    def advance(self, task: TaskID | None, steps: float = 1, status: str | None = None) -> None:
        if self._progress is None or task is None:
            return
        if status is None:
            self._progress.advance(task, steps)
        else:
            self._progress.update(task, advance=steps, status=status)

    def log(self, message: str) -> None:
        """Print a line above the bars (nothing when disabled)."""
        if self._progress is not None:
            self._progress.console.print(message)


def track(
    items: Iterable[T],
    description: str,
    total: float | None,
    *,
    enabled: bool = True,
    unit: str = "",
    per_step: float = 1.0,
) -> Iterator[T]:
    """Yield ``items`` while advancing one transient bar by one step per item."""
    if not enabled:
        yield from items
        return
    with ProgressBars(True, transient=True) as bars:
        task = bars.add(description, total, unit=unit, per_step=per_step)
        for item in items:
            yield item
            bars.advance(task)


__all__ = ["ProgressBars", "track"]
