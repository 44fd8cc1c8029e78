"""``float`` band: plain fp32 rows, one per id (trainable); lossless."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctrzip.nn.embedding.bands.base import Band, register_band


@register_band
class FloatBand(Band):
    """``weight [rows, D]`` float32 parameter; ``4 * D`` bytes per id."""

    kind = "float"

    def __init__(self, rows: int, dim: int) -> None:
        super().__init__(rows, dim)
        self.weight = nn.Parameter(torch.zeros(rows, dim))

    @classmethod
    def bytes_for(cls, rows: int, dim: int, **params: Any) -> int:
        return rows * dim * 4

    @classmethod
    def fit(cls, weight: Tensor, counts: Tensor | None, valid: Tensor, **params: Any) -> FloatBand:
        band = cls(weight.shape[0], weight.shape[1]).to(weight.device)
        with torch.no_grad():
            band.weight.copy_(weight)
        return band

    def forward(self, local_ids: Tensor) -> Tensor:
        return F.embedding(local_ids, self.weight)
