"""``RowwiseQuantTable``: row-wise quantized embedding rows (fp16, int8, int4, int2).

The industrial post-training baseline (FBGEMM / TorchRec "row-wise" quantization; Guan et
al., "Post-training 4-bit quantization on embedding tables", 2019): each row ``x`` is stored
as ``bits``-bit integers ``q`` with its own ``scale`` and ``bias`` and rebuilt as
``x ~= q * scale + bias``.

Storage is FBGEMM's fused row layout, one ``uint8`` buffer ``packed [V, row_bytes]``:

- int8: ``D`` bytes of codes, then ``scale`` and ``bias`` as float32 (8 bytes);
- int4 / int2: ``ceil(D' * bits / 8)`` bytes of codes (element ``j`` in bits
  ``(j % per_byte) * bits`` of byte ``j // per_byte``, low bits first), then ``scale`` and
  ``bias`` as float16 (4 bytes); ``D'`` is ``D`` rounded up to a multiple of ``8 / bits``
  (padding columns repeat the last one, and are counted in the bytes);
- fp16: a ``float16 [V, D]`` buffer ``fp16_rows`` instead (no scale or bias).

On CPU the lookup runs PyTorch's quantized operators (``quantized::embedding_bag_*_rowwise_offsets``);
elsewhere (CUDA) the same bytes are unpacked with plain tensor ops, which give the same values.
Tables are frozen: no parameter, so a fine-tune trains the rest of the model around them.
The padding id maps to exactly zero.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.swappable import register_swappable

if TYPE_CHECKING:
    from ctrzip.nn.embedding.fused import TableGroup

BITS = (16, 8, 4, 2)
_PREPACK = {
    8: "embedding_bag_byte_prepack",
    4: "embedding_bag_4bit_prepack",
    2: "embedding_bag_2bit_prepack",
}
_LOOKUP = {
    8: "embedding_bag_byte_rowwise_offsets",
    4: "embedding_bag_4bit_rowwise_offsets",
    2: "embedding_bag_2bit_rowwise_offsets",
}


def padded_dim(dim: int, bits: int) -> int:
    """Columns actually stored: ``dim`` rounded up to whole bytes of ``bits``-bit codes."""
    per_byte = 8 // bits if bits < 8 else 1
    return -(-dim // per_byte) * per_byte


def row_bytes(dim: int, bits: int) -> int:
    """Stored bytes of one row of width ``dim`` at ``bits`` (codes + scale + bias + padding)."""
    if bits == 16:
        return 2 * dim
    if bits == 8:
        return dim + 8
    return padded_dim(dim, bits) * bits // 8 + 4


@functools.cache  # asked on every lookup: the answer is fixed for the process
def _has_cpu_ops() -> bool:
    return all(hasattr(torch.ops.quantized, n) for n in (*_PREPACK.values(), *_LOOKUP.values()))


def quantize_rows(weight: Tensor, bits: int, optimized_qparams: bool = False) -> Tensor:
    """Pack float rows ``[V, D]`` into the fused ``uint8 [V, row_bytes]`` layout (bits 8, 4, 2).

    Uses PyTorch's prepack operators (on CPU; the result is moved back to ``weight``'s device).
    ``optimized_qparams`` searches each row's range for the lowest squared error (int4/int2 only;
    about 15 us per row on one core) instead of min/max.
    """
    if bits not in _PREPACK:
        raise CompressionError(f"row-wise quantization: bits must be one of 8, 4, 2, got {bits}")
    v, d = weight.shape
    w = weight.detach().to("cpu", torch.float32)
    dp = padded_dim(d, bits)
    if dp != d:  # FBGEMM packs whole bytes: pad by repeating the last column (the row's
        # range, hence its scale and bias, is unchanged); sliced off on lookup
        w = torch.cat([w, w[:, -1:].expand(v, dp - d)], dim=1)
    op = getattr(torch.ops.quantized, _PREPACK[bits])
    packed = op(w.contiguous()) if bits == 8 else op(w.contiguous(), optimized_qparams=optimized_qparams)
    return packed.to(weight.device)


def dequantize_rows(packed: Tensor, bits: int, dim: int) -> Tensor:
    """Unpack fused rows ``uint8 [n, row_bytes]`` to float32 ``[n, dim]`` with plain tensor ops."""
    n = packed.shape[0]
    if bits == 8:
        codes = packed[:, :dim].float()
        sb = packed[:, dim : dim + 8].contiguous().view(torch.float32)  # [n, 2]
    else:
        per_byte = 8 // bits
        nbytes = padded_dim(dim, bits) // per_byte
        raw = packed[:, :nbytes].to(torch.int32)
        shifts = torch.arange(per_byte, device=packed.device, dtype=torch.int32) * bits
        codes = ((raw.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)).reshape(n, -1)[:, :dim].float()
        sb = packed[:, nbytes : nbytes + 4].contiguous().view(torch.float16).float()  # [n, 2]
    return codes * sb[:, :1] + sb[:, 1:2]


@register_swappable
class RowwiseQuantTable(EmbeddingTable):
    """Frozen table of row-wise quantized rows (see the module docstring for the layout).

    Args:
        num_embeddings: V.
        embedding_dim: D.
        bits: 16 (fp16), 8, 4 or 2.
        padding_idx: id whose vector is exactly zero (None: no such id).

    Raises:
        CompressionError: ``bits`` not in (16, 8, 4, 2).
    """

    def __init__(
        self, num_embeddings: int, embedding_dim: int, bits: int = 8, padding_idx: int | None = 0
    ) -> None:
        super().__init__()
        if bits not in BITS:
            raise CompressionError(f"row-wise quantization: bits must be one of {BITS}, got {bits}")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.bits = bits
        self.padding_idx = padding_idx
        if bits == 16:
            self.register_buffer("fp16_rows", torch.zeros(num_embeddings, embedding_dim, dtype=torch.float16))
        else:
            width = row_bytes(embedding_dim, bits)
            self.register_buffer("packed", torch.zeros(num_embeddings, width, dtype=torch.uint8))

    @classmethod
    def from_dense(
        cls, weight: Tensor, bits: int, padding_idx: int | None = 0, optimized_qparams: bool = False
    ) -> RowwiseQuantTable:
        """Quantize a float table ``[V, D]`` (e.g. ``old.materialize()``); same device as ``weight``."""
        v, d = weight.shape
        table = cls(v, d, bits, padding_idx=padding_idx).to(weight.device)
        with torch.no_grad():
            if bits == 16:
                table.fp16_rows.copy_(weight.detach().to(torch.float16))
            else:
                table.packed.copy_(quantize_rows(weight, bits, optimized_qparams))
        return table

    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        flat = ids.reshape(-1).long().contiguous()
        if self.bits == 16:
            out = self.fp16_rows[flat].float()
        elif self.packed.device.type == "cpu" and _has_cpu_ops() and flat.numel() > 0:
            op = getattr(torch.ops.quantized, _LOOKUP[self.bits])
            offsets = torch.arange(flat.numel(), dtype=torch.long)  # one id per bag = a lookup
            out = op(self.packed.contiguous(), flat, offsets, mode=0)[:, : self.embedding_dim]
        else:
            out = dequantize_rows(self.packed[flat], self.bits, self.embedding_dim)
        if self.padding_idx is not None:
            out = out.masked_fill((flat == self.padding_idx).unsqueeze(-1), 0.0)
        return out.reshape(*ids.shape, self.embedding_dim)

    def materialize(self) -> Tensor:
        if self.bits == 16:
            w = self.fp16_rows.float()
        else:
            w = dequantize_rows(self.packed, self.bits, self.embedding_dim)
        if self.padding_idx is not None:
            w[self.padding_idx] = 0.0
        return w

    def nbytes(self) -> int:
        buf = self.fp16_rows if self.bits == 16 else self.packed
        return buf.numel() * buf.element_size()

    def group_class(self) -> type[TableGroup] | None:
        """``RowwiseQuantGroup`` (one quantized-operator call for several fields); None for
        subclasses (they may compute something else)."""
        if type(self) is not RowwiseQuantTable:
            return None
        from ctrzip.nn.embedding.fused_rowwise import RowwiseQuantGroup

        return RowwiseQuantGroup

    def group_key(self) -> Hashable:
        from ctrzip.nn.embedding.fused_rowwise import rowwise_group_key

        return rowwise_group_key(self)

    def spec(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "bits": self.bits,
            "padding_idx": self.padding_idx,
        }

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}"


__all__ = ["BITS", "RowwiseQuantTable", "dequantize_rows", "quantize_rows", "row_bytes"]
