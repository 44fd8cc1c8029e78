"""Data-parallel passes of compression under ``torchrun`` (issue 14, item 2).

Each rank runs its share of a pass (whole batches, ``distributed.batch_shard``) and the
results are combined exactly: float64 moment sums are all-reduced (``RunningMoments.
all_reduce_``); validation logits and labels are gathered, so AUC and logloss are computed
once over every row, never averaged over ranks. Results fitted on every rank (k-means, MEC
stage 1) are pinned to rank 0's by a broadcast. In a single process every function here is
the plain single-process pass, so callers never branch on world size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from ctrzip import distributed as dist
from ctrzip.compression.calibrate import Observer, calibrate
from ctrzip.compression.stats import RunningMoments
from ctrzip.data.dataset import SplitArrays
from ctrzip.data.loader import BatchLoader

T = TypeVar("T")


def shard_split(split: SplitArrays, batch_size: int, max_batches: int | None = None) -> SplitArrays:
    """This rank's rows of a pass over ``split`` (memory-map slices: nothing is copied).

    The shards of all ranks are whole batches of the single-process pass, in order, and
    together cover its first ``max_batches`` batches (all of them when None) exactly once.
    """
    a, b = dist.batch_shard(len(split), batch_size, max_batches)
    if (a, b) == (0, len(split)):
        return split
    return SplitArrays(split.sparse[a:b], split.dense[a:b], split.label[a:b])


def sharded_calibrate(
    model: nn.Module,
    observers: Mapping[str, Observer],
    split: SplitArrays,
    *,
    batch_size: int,
    device: torch.device,
    max_batches: int | None = None,
    where: Literal["output", "input"] = "output",
    progress: bool = False,
) -> Mapping[str, Observer]:
    """``calibrate`` over this rank's shard of ``split``, then every ``RunningMoments``
    observer all-reduced, so each rank holds the moments of the whole pass (equal to one
    process's up to the float64 order of the cross-rank sum).

    Args:
        model: the model being compressed (the same on every rank).
        observers: ``{fqn: observer}``; every one must be a ``RunningMoments`` when the job
            has more than one rank (other observers cannot be combined).
        split: the rows of the whole pass.
        batch_size: rows per forward (the shards are whole batches).
        device: where batches go.
        max_batches: the single-process pass's cap on batches (None = every row).
        where: see ``calibrate.observe``.
        progress: a progress bar (rank 0 only).

    Raises:
        TypeError: an observer that is not a ``RunningMoments`` in a multi-rank job.
    """
    if dist.is_distributed():
        odd = [fqn for fqn, o in observers.items() if not isinstance(o, RunningMoments)]
        if odd:
            raise TypeError(f"observers {odd} cannot be combined across ranks (not RunningMoments)")
    part = shard_split(split, batch_size, max_batches)
    loader = BatchLoader(part, batch_size=batch_size, shuffle=False, device=device)
    calibrate(model, observers, loader, where=where, progress=progress and dist.is_main())
    for obs in observers.values():
        if isinstance(obs, RunningMoments):
            obs.all_reduce_()
    return observers


def sharded_evaluate(
    model: nn.Module,
    data: Any,
    *,
    batch_size: int = 8192,
    device: str | torch.device = "auto",
    name: str | None = None,
) -> dict[str, float]:
    """``ctrzip.train.evaluate`` with the rows of a split shared out over the ranks.

    Each rank scores its whole batches; the logits and labels are gathered in row order and
    AUC/logloss computed from all of them on every rank, so the result equals one process's
    exactly (same batches, same per-row logits, same metric code). In one process, or for
    ``data`` that is not a ``SplitArrays`` (a loader, an iterable), this is ``evaluate``.

    Returns:
        ``{"auc", "logloss", "n"}``.

    Raises:
        TrainingError: the split has no rows or one class only (names ``name``).
    """
    from ctrzip.train.checks import check_device, check_labels
    from ctrzip.train.evaluation import _sigmoid, evaluate, iter_batches
    from ctrzip.train.metrics import auc, logloss

    if not dist.is_distributed() or not isinstance(data, SplitArrays):
        return evaluate(model, data, batch_size=batch_size, device=device, name=name)
    name = name or "the evaluated data"
    check_labels(np.asarray(data.label), name)  # every rank, before any forward: no rank waits
    dev = check_device(device, "device")
    model.to(dev)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        with torch.no_grad():
            for batch in iter_batches(shard_split(data, batch_size), batch_size, dev):
                logits.append(model(batch).float())
                labels.append(batch.label.float())
    finally:
        model.train(was_training)
    cdev = dist.collective_device()
    z_part = torch.cat(logits).to(cdev) if logits else torch.zeros(0, device=cdev)
    y_part = torch.cat(labels).to(cdev) if labels else torch.zeros(0, device=cdev)
    z = dist.all_gather_rows(z_part).cpu().numpy().astype(np.float64)
    y = dist.all_gather_rows(y_part).cpu().numpy().astype(np.float64)
    return {"auc": auc(y, z), "logloss": logloss(y, _sigmoid(z)), "n": float(y.size)}


def pin_result(result: T, src: int = 0) -> T:
    """A dataclass every rank computed for itself, with rank ``src``'s values on every rank:
    its tensor fields broadcast in place, the rest (plain values) sent as one object. The
    identity in one process."""
    if not dist.is_distributed():
        return result
    assert dataclasses.is_dataclass(result) and not isinstance(result, type)
    plain: dict[str, Any] = {}
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if isinstance(value, Tensor):
            dist.broadcast_(value, src)
        else:
            plain[f.name] = value
    return dataclasses.replace(result, **dist.broadcast_object(plain, src))  # type: ignore[type-var]
