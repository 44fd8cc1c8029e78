"""``Batch``: the one type that flows from loader to model and trainer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Batch:
    """A minibatch of encoded rows.

    Attributes:
        sparse: ``[B, S]`` int32/int64 ids of the sparse fields (see ``FeatureSchema.sparse_slices``).
        dense: ``[B, Dn]`` float32 values of dense fields (``Dn`` may be 0).
        label: ``[B]`` float32 0/1 clicks.
    """

    sparse: Tensor
    dense: Tensor
    label: Tensor

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            self.sparse.to(device, non_blocking=non_blocking),
            self.dense.to(device, non_blocking=non_blocking),
            self.label.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Batch:
        return Batch(self.sparse.pin_memory(), self.dense.pin_memory(), self.label.pin_memory())
