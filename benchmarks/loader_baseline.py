"""The BatchLoader as it was before issue 13 (commit 6a49ffe), frozen for ``bench_data.py``'s
old-vs-new loader comparison in one run. Not used by the package; do not edit."""

# ruff: noqa
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from ctrzip.data.batch import Batch
from ctrzip.data.dataset import SplitArrays
from ctrzip.data.loader import resolve_device


class BatchLoader:
    """Iterate ``Batch`` objects over one split.

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
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.device = resolve_device(device)
        self.block_rows = batch_size * max(1, block_batches)
        self.drop_last = drop_last
        self.merge_single_last = merge_single_last
        self.epoch = 0

    def _merges(self) -> bool:
        """True when this epoch's last batch has one row and joins the one before it."""
        n, bs = len(self.split), self.batch_size
        return self.merge_single_last and not self.drop_last and bs > 1 and n > 1 and n % bs == 1

    def __len__(self) -> int:
        n = len(self.split)
        if self.drop_last or self._merges():
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    @property
    def num_rows(self) -> int:
        return len(self.split)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _blocks(self, rng: np.random.Generator | None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        n = len(self.split)
        starts = np.arange(0, n, self.block_rows)
        if rng is not None:
            # permute the full blocks; a short last block stays last so no carry-over copies are needed
            full = starts[starts + self.block_rows <= n]
            starts = np.concatenate([rng.permutation(full), starts[len(full) :]])
        for s in starts:
            e = min(n, s + self.block_rows)
            if rng is None:
                # copy out of the (read-only) memory map: torch tensors must own writable memory
                yield (np.array(self.split.sparse[s:e]), np.array(self.split.dense[s:e]),
                       np.array(self.split.label[s:e]))  # fmt: skip
            else:
                perm = rng.permutation(e - s)  # one gather per array: read + shuffle in one copy
                yield (np.asarray(self.split.sparse[s:e])[perm], np.asarray(self.split.dense[s:e])[perm],
                       np.asarray(self.split.label[s:e])[perm])  # fmt: skip

    def __iter__(self) -> Iterator[Batch]:
        pin = self.device.type == "cuda"
        if not self._merges():
            for part in self._cpu_batches():
                yield self._emit(*part, pin)
            return
        pending = None  # one batch of lookahead: only the last batch can have one row (bs > 1)
        for part in self._cpu_batches():
            if pending is not None:
                if len(part[2]) == 1:
                    part = tuple(torch.cat([a, b]) for a, b in zip(pending, part, strict=True))
                else:
                    yield self._emit(*pending, pin)
            pending = part
        if pending is not None:
            yield self._emit(*pending, pin)

    def _cpu_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng(self.seed + self.epoch) if self.shuffle else None
        bs = self.batch_size
        carry: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for sp, de, la in self._blocks(rng):
            if carry:  # prepend leftovers of the previous block so batches stay full
                sp = np.concatenate([carry[0][0], sp])
                de = np.concatenate([carry[0][1], de])
                la = np.concatenate([carry[0][2], la])
                carry = []
            full = (len(la) // bs) * bs
            tsp, tde, tla = torch.from_numpy(sp), torch.from_numpy(de), torch.from_numpy(la)
            for i in range(0, full, bs):
                yield tsp[i : i + bs], tde[i : i + bs], tla[i : i + bs]
            if full < len(la):
                carry = [(sp[full:], de[full:], la[full:])]
        if carry and not self.drop_last:
            sp, de, la = carry[0]
            yield torch.from_numpy(sp), torch.from_numpy(de), torch.from_numpy(la)

    def _emit(self, sp: torch.Tensor, de: torch.Tensor, la: torch.Tensor, pin: bool) -> Batch:
        batch = Batch(sp, de, la)
        if self.device.type == "cpu":
            return batch
        if pin:
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=pin)
