"""Calibration: run data through a model with observers hooked on named modules.

Follows torchao's prepare -> observe -> convert split: ``observe`` only attaches forward
hooks (removed on exit, even on exceptions) and never changes an activation;
``calibrate`` is the one streaming pass (eval mode, no_grad) that feeds them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ctrzip.compression.stats import RunningMoments
from ctrzip.data.batch import Batch
from ctrzip.progress import track


@runtime_checkable
class Observer(Protocol):
    """Accumulates statistics of the tensors it is shown; never modifies them."""

    def update(self, x: Tensor) -> None: ...


class IdMaskedMoments(RunningMoments):
    """``RunningMoments`` of a table's outputs that skips lookups of one id (sequence padding).

    ``observe`` calls ``update_call(inputs, output)`` when an observer defines it, so this
    observer sees the ids that produced each row.

    Args:
        ignore_id: the id whose rows are not counted (None counts every row).
    """

    def __init__(self, ignore_id: int | None = 0, dim: int | None = None) -> None:
        super().__init__(dim)
        self.ignore_id = ignore_id

    def update_call(self, inputs: tuple[Any, ...], output: Tensor) -> None:
        if self.ignore_id is None:
            self.update(output)
            return
        keep = inputs[0] != self.ignore_id
        self.update(output[keep])


def _make_hook(obs: Observer, where: str):  # type: ignore[no-untyped-def]
    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if hasattr(obs, "update_call"):
            obs.update_call(inputs, output)  # type: ignore[attr-defined]
        elif where == "output":
            obs.update(output)
        else:
            obs.update(inputs[0])
        return None  # never replaces the output

    return hook


@contextlib.contextmanager
def observe(
    model: nn.Module, observers: Mapping[str, Observer], where: Literal["output", "input"] = "output"
) -> Iterator[Mapping[str, Observer]]:
    """Attach each observer to the module at its fqn for the duration of the block.

    Args:
        model: root module.
        observers: ``{fqn: observer}``.
        where: feed the module's output (default) or its first positional input.
    """
    if where not in ("output", "input"):
        raise ValueError(f"where must be 'output' or 'input', got {where!r}")
    handles = []
    try:
        for fqn, obs in observers.items():
            module = model.get_submodule(fqn)
            handles.append(module.register_forward_hook(_make_hook(obs, where)))
        yield observers
    finally:
        for h in handles:
            h.remove()


def _progress(batches: Iterable[Batch], total: int | None, show: bool) -> Iterator[Batch]:
    return track(batches, "calibrating", total, enabled=show, unit="batches")


def calibrate(
    model: nn.Module,
    observers: Mapping[str, Observer],
    batches: Iterable[Batch],
    *,
    where: Literal["output", "input"] = "output",
    max_batches: int | None = None,
    progress: bool = False,
) -> Mapping[str, Observer]:
    """One pass of ``batches`` through ``model`` (eval, no_grad) feeding ``observers``.

    The model's train/eval mode is restored afterwards.

    Args:
        model: the exact model to be compressed.
        observers: ``{fqn: observer}``.
        batches: iterable of ``Batch`` already on the model's device (e.g. a ``BatchLoader``).
        where: see ``observe``.
        max_batches: stop after this many batches (None = the whole pass).
        progress: show a progress bar.
    """
    was_training = model.training
    model.eval()
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    if max_batches is not None:
        total = min(total, max_batches) if total is not None else max_batches
    try:
        with torch.no_grad(), observe(model, observers, where):
            for i, batch in enumerate(_progress(batches, total, progress)):
                if max_batches is not None and i >= max_batches:
                    break
                model(batch)
    finally:
        model.train(was_training)
    return observers
