"""Training progress bar (rich): samples/s and ETA; a no-op when disabled."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _SamplesPerSecond(ProgressColumn):
    """Rows per second; the task advances by steps and carries the batch size as a field."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("- samples/s", style="progress.data.speed")
        rows = speed * float(task.fields.get("rows_per_step", 1))
        return Text(f"{rows:,.0f} samples/s", style="progress.data.speed")


class TrainProgress:
    """One bar per epoch; ``enabled=False`` makes every method a no-op (tests, logs).

    Args:
        enabled: draw the bar and print evaluation lines.
        rows_per_step: batch size, to convert steps/s into samples/s.
    """

    def __init__(self, enabled: bool, rows_per_step: int) -> None:
        self.enabled = enabled
        self.rows_per_step = rows_per_step
        self._progress: Progress | None = None
        self._task: int | None = None

    def __enter__(self) -> TrainProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _SamplesPerSecond(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def start_epoch(self, epoch: int, total_steps: int, done_steps: int = 0) -> None:
        if self._progress is None:
            return
        self._task = self._progress.add_task(
            f"epoch {epoch}",
            total=total_steps,
            completed=done_steps,
            rows_per_step=self.rows_per_step,
            status="",
        )

    def advance(self, status: str | None = None) -> None:
        if self._progress is None or self._task is None:
            return
        if status is None:
            self._progress.advance(self._task)
        else:
            self._progress.update(self._task, advance=1, status=status)

    def log(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message)
