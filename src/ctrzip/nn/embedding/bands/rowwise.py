"""``rowwise`` band: row-wise quantized rows (fp16, int8, int4, int2) in a ``RowwiseQuantTable``.

Frozen (no parameter): the stored rows are integers with a per-row scale and bias, as
FBGEMM/TorchRec ship them. Parameters: ``bits`` (16, 8, 4 or 2) and the fit-only
``optimized_qparams`` (int4/int2: search each row's range for the least squared error).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ctrzip.nn.embedding.bands.base import Band, register_band
from ctrzip.nn.embedding.rowwise import BITS, RowwiseQuantTable, row_bytes


@register_band
class RowwiseBand(Band):
    """``table``: a ``RowwiseQuantTable`` of the band's rows (no padding id of its own)."""

    kind = "rowwise"
    defaults = {"bits": 8, "optimized_qparams": False}
    fit_only = frozenset({"optimized_qparams"})

    def __init__(self, rows: int, dim: int, bits: int = 8) -> None:
        super().__init__(rows, dim)
        self.bits = bits
        self.table = RowwiseQuantTable(rows, dim, bits=bits, padding_idx=None)

    @classmethod
    def check(cls, params: dict[str, Any], rows: int, dim: int) -> None:
        if isinstance(params["bits"], bool) or params["bits"] not in BITS:
            raise ValueError(f"bits must be one of {BITS}, got {params['bits']!r}")
        if not isinstance(params["optimized_qparams"], bool):
            raise ValueError(f"optimized_qparams must be true or false, got {params['optimized_qparams']!r}")

    @classmethod
    def bytes_for(cls, rows: int, dim: int, **params: Any) -> int:
        return rows * row_bytes(dim, params["bits"])

    @classmethod
    def fit(cls, weight: Tensor, counts: Tensor | None, valid: Tensor, **params: Any) -> RowwiseBand:
        band = cls(weight.shape[0], weight.shape[1], bits=params["bits"])
        band.table = RowwiseQuantTable.from_dense(
            weight, params["bits"], padding_idx=None, optimized_qparams=params["optimized_qparams"]
        )
        return band

    def forward(self, local_ids: Tensor) -> Tensor:
        return self.table(local_ids)
