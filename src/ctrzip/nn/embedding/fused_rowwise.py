"""Fused lookups of row-wise quantized tables: one quantized-operator call per group.

A ``RowwiseQuantGroup`` packs ``k`` ``RowwiseQuantTable`` s of one dim, ``bits``, padding id
and device (``ctrzip.nn.embedding.fused`` explains groups) into one fused-row buffer
``[sum N_f + 1, row_bytes]`` (``uint8``; ``float16 [sum N_f + 1, D]`` for ``bits=16``) whose
row slices the members' ``packed`` (``fp16_rows``) buffers view: no byte is held twice; the
last row is all zeros (it decodes to an exact zero vector) and padding ids read it, so
``nbytes`` is the members' sum plus one row.

``forward`` on ``[B, k]`` local ids shifts them by the members' row offsets and runs one
``quantized::embedding_bag_{byte,4bit,2bit}_rowwise_offsets`` call over the ``B * k`` ids
(one id per bag, i.e. a plain lookup) on CPU; where those operators are missing (CUDA,
builds without FBGEMM) it unpacks the gathered rows with ``dequantize_rows``, like the
per-field table does. Outputs equal ``stack([t(ids[:, f]) ...], 1)`` bit for bit (same
operator, same rows); the tables are frozen, so there is no gradient to route.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.fused import TableGroup
from ctrzip.nn.embedding.rowwise import _LOOKUP, RowwiseQuantTable, _has_cpu_ops, dequantize_rows

__all__ = ["RowwiseQuantGroup", "rowwise_group_key"]


def _buffer(t: RowwiseQuantTable) -> Tensor:
    return t.fp16_rows if t.bits == 16 else t.packed


def rowwise_group_key(table: RowwiseQuantTable) -> Hashable:
    """What row-wise tables must share to be packed together."""
    buf = _buffer(table)
    return ("rowwise", table.embedding_dim, table.bits, table.padding_idx, buf.device, buf.shape[1])


class RowwiseQuantGroup(TableGroup):
    """``RowwiseQuantTable`` s packed into one fused-row buffer, looked up with one operator call.

    Raises:
        ValueError: tables of other kinds, or differing in ``rowwise_group_key``.
    """

    def __init__(self, tables: Sequence[RowwiseQuantTable]) -> None:
        super().__init__(tables)
        self._check_packable(tables)
        t0 = tables[0]
        self.bits, self.padding_idx = t0.bits, t0.padding_idx
        b0 = _buffer(t0)
        # one all-zero row at the end: zero codes, scale and bias decode to an exact zero
        # vector in every format, so padding ids are remapped to it instead of masking
        self.packed = torch.zeros(self.total_rows + 1, b0.shape[1], dtype=b0.dtype, device=b0.device)
        with torch.no_grad():
            for t, start, n in zip(tables, self.starts, self.sizes, strict=True):
                self.packed[start : start + n].copy_(_buffer(t))
        for t, start, n in zip(tables, self.starts, self.sizes, strict=True):
            _buffer(t).data = self.packed[start : start + n]  # same buffer object, packed storage
        self.offsets = self.offsets.to(b0.device)

    @classmethod
    def pack(cls, tables: Sequence[EmbeddingTable]) -> RowwiseQuantGroup:
        bad = [type(t).__name__ for t in tables if type(t) is not RowwiseQuantTable]
        if bad:
            raise ValueError(f"RowwiseQuantGroup packs RowwiseQuantTable only, got {bad}")
        return cls(tables)  # type: ignore[arg-type]

    def forward(self, ids: Tensor) -> Tensor:  # [B, k] local ids -> [B, k, D]
        gids = self.global_ids(ids)
        if self.padding_idx is not None:
            gids = gids.masked_fill(ids == self.padding_idx, self.total_rows)
        gids = gids.reshape(-1)
        d = self.embedding_dim
        if self.bits == 16:
            out = self.packed.index_select(0, gids).float()
        elif self.packed.device.type == "cpu" and _has_cpu_ops() and gids.numel() > 0:
            op = getattr(torch.ops.quantized, _LOOKUP[self.bits])
            bags = torch.arange(gids.numel(), dtype=torch.long)  # one id per bag = a lookup
            out = op(self.packed, gids, bags, mode=0)[:, :d]
        else:
            out = dequantize_rows(self.packed.index_select(0, gids), self.bits, d)
        return out.reshape(*ids.shape, d)

    def unpack(self) -> list[EmbeddingTable]:
        for t in self._members:
            buf = _buffer(t)  # type: ignore[arg-type]
            buf.data = buf.data.clone()
        return list(self._members)

    def nbytes(self) -> int:
        """The members' ``nbytes`` sum plus the one zero row padding reads."""
        return self.packed.numel() * self.packed.element_size()

    def in_sync(self) -> bool:
        p = self.packed
        row = p.stride(0) * p.element_size()
        for t, start, n in zip(self._members, self.starts, self.sizes, strict=True):
            buf = _buffer(t)  # type: ignore[arg-type]
            if (
                buf.device != p.device
                or buf.dtype != p.dtype
                or buf.shape != (n, p.shape[1])
                or not buf.is_contiguous()
                or buf.data_ptr() != p.data_ptr() + start * row
            ):
                return False
        return True
