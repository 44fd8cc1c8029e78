"""Batches over encoded arrays, without per-row Python.

Shuffling is by blocks (``ctrzip.data.order``): the block order is permuted and the rows of
each block are permuted, so reads stay within one contiguous range of a 45M-row memory map
at a time while rows mix well enough for SGD. Each batch is gathered straight from the
memory map into its own arrays by a background thread (``ctrzip.data.prefetch``), or, with
the split resident on the device (``ctrzip.data.placement``), by one ``index_select`` per
array there.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ctrzip.config import ConfigError
from ctrzip.data.batch import Batch
from ctrzip.data.dataset import SplitArrays
from ctrzip.data.order import BatchPlan, EpochOrder
from ctrzip.data.placement import resolve_placement, to_device
from ctrzip.data.prefetch import prefetched


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names as ``torch.device``.

    Raises:
        ConfigError: ``device`` is not a device name, or names CUDA on a machine/build without it.
    """
    from ctrzip.config import ConfigError

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device {device!r} is not a device name ({err}); use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r}: CUDA is not available on this machine/torch build; use auto or cpu"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


class BatchLoader:
    """Iterate ``Batch`` objects over one split.

    Batches hold ``sparse [B, S]``, ``dense [B, Dn]`` and ``label [B]`` with the split's dtypes
    (int32 ids, float32 values and labels as encoded), on ``device``; each batch owns its
    memory (never a view of the split or of another batch).

    Args:
        split: the arrays (memory-mapped or in memory).
        batch_size: rows per batch.
        shuffle: permute blocks and rows within blocks, reseeded each epoch.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        device: where batches go (``"auto"``, ``"cpu"``, ``"cuda"``); pinned memory on CUDA.
        block_batches: batches per shuffle block.
        drop_last: drop a final partial batch.
        merge_single_last: append a final batch of one row to the batch before it (for
            training: BatchNorm cannot normalize one row); every row is still served.
        data_placement: ``stream`` (gather each batch from the memory map), ``resident``
            (copy the split to ``device`` once and gather there) or ``auto`` (resident on
            CUDA when it fits in half the free memory); see ``ctrzip.data.placement``. The
            rows and their order are the same for every placement.
        prefetch: batches a background thread prepares ahead when streaming (0: prepare
            them in the iterating thread). The thread never changes which rows a batch holds.
        placement_setting: the name error messages give ``data_placement`` (the trainer
            passes ``train.data_placement``).

    Raises:
        ConfigError: ``batch_size`` or ``block_batches`` < 1, ``prefetch`` < 0, an unknown
            ``data_placement``, or ``resident`` for a split that does not fit on ``device``.
    """

    def __init__(
        self,
        split: SplitArrays,
        batch_size: int = 4096,
        shuffle: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        block_batches: int = 32,
        drop_last: bool = False,
        merge_single_last: bool = False,
        *,
        data_placement: str = "stream",
        prefetch: int = 2,
        placement_setting: str = "data_placement",
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if block_batches < 1:
            raise ConfigError(f"block_batches must be >= 1, got {block_batches}")
        if prefetch < 0:
            raise ConfigError(f"prefetch must be >= 0 (0: no background thread), got {prefetch}")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.device = resolve_device(device)
        self.block_rows = batch_size * block_batches
        self.drop_last = drop_last
        self.merge_single_last = merge_single_last
        self.prefetch = prefetch
        self.epoch = 0
        self.placement = resolve_placement(data_placement, split, self.device, placement_setting)
        self._resident = to_device(split, self.device) if self.placement == "resident" else None

    def _plan(self) -> BatchPlan:
        return BatchPlan(len(self.split), self.batch_size, self.drop_last, self.merge_single_last)

    def __len__(self) -> int:
        return len(self._plan())

    @property
    def num_rows(self) -> int:
        return len(self.split)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> np.ndarray:
        """This epoch's row indices in serving order (int64 ``[N]``; batches are consecutive
        runs of it, dropped rows included at the end)."""
        return self._order().rows()

    def _order(self) -> EpochOrder:
        rng = np.random.default_rng(self.seed + self.epoch) if self.shuffle else None
        return EpochOrder(len(self.split), self.block_rows, rng)

    def __iter__(self) -> Iterator[Batch]:
        plan, order = self._plan(), self._order()  # fixed now: set_epoch later changes the next epoch
        if self._resident is not None:
            return self._resident_batches(plan, order)
        pin = self.device.type == "cuda"
        host = prefetched(lambda: self._host_batches(plan, order, pin), self.prefetch, "ctrzip-loader")
        if self.device.type == "cpu":
            return host
        return (b.to(self.device, non_blocking=pin) for b in host)

    def _host_batches(self, plan: BatchPlan, order: EpochOrder, pin: bool) -> Iterator[Batch]:
        arrays = (self.split.sparse, self.split.dense, self.split.label)
        for k in range(len(plan)):
            start, stop = plan.bounds(k)
            pieces = list(order.pieces(start, stop))
            yield Batch(*(_gather(a, pieces, stop - start, pin) for a in arrays))

    def _resident_batches(self, plan: BatchPlan, order: EpochOrder) -> Iterator[Batch]:
        r = self._resident
        assert r is not None
        if order.rng is None:  # stored order: each batch is a copy of one slice
            for k in range(len(plan)):
                start, stop = plan.bounds(k)
                yield Batch(*(_copy_rows(a, start, stop) for a in (r.sparse, r.dense, r.label)))
            return
        rows = torch.from_numpy(order.rows()).to(self.device)  # one upload per epoch
        for k in range(len(plan)):
            start, stop = plan.bounds(k)
            idx = rows[start:stop]
            yield Batch(_select(r.sparse, idx), _select(r.dense, idx), _select(r.label, idx))


def _copy_rows(t: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """A copy of rows ``[start, stop)`` of ``t`` (numpy's single-threaded copy on CPU, as in ``_select``)."""
    if t.device.type == "cpu":
        return torch.from_numpy(t.numpy()[start:stop].copy())
    return t[start:stop].clone()


def _select(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[idx]`` along dim 0 as a new tensor, on ``t``'s device.

    On CPU ``numpy.take`` (one thread, GIL released): torch's CPU ``index_select`` spreads
    row copies over intra-op threads and slows down several-fold on a busy 2-core machine.
    """
    if t.device.type == "cpu":
        return torch.from_numpy(np.take(t.numpy(), idx.numpy(), axis=0))
    return t.index_select(0, idx)


def _gather(
    array: np.ndarray, pieces: list[tuple[int, int, np.ndarray | slice]], rows: int, pin: bool
) -> torch.Tensor:
    """The rows ``pieces`` name (see ``EpochOrder.pieces``), concatenated into a new tensor
    ``[rows, ...]`` with ``array``'s dtype (in pinned memory with ``pin``)."""
    shape = (rows, *array.shape[1:])
    if pin:
        out = torch.empty(shape, dtype=_torch_dtype(array.dtype), pin_memory=True)
        view = out.numpy()
    else:
        view = np.empty(shape, dtype=array.dtype)
        out = torch.from_numpy(view)
    at = 0
    for s, e, idx in pieces:
        block = array[s:e]
        if isinstance(idx, slice):
            m = idx.stop - idx.start
            view[at : at + m] = block[idx]
        else:
            m = len(idx)
            # mode="clip": indices are in range by construction, and "raise" would buffer ``out``
            np.take(block, idx, axis=0, out=view[at : at + m], mode="clip")
        at += m
    return out


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype
