"""``QRTable``: DLRM's quotient-remainder embeddings (Shi et al., "Compositional Embeddings Using
Complementary Partitions for Memory-Efficient Recommendation Systems", KDD 2020).

With ``c`` collisions, id ``i`` is split by the complementary partitions ``q = i // c`` and
``r = i mod c`` and its vector combines one row of each of two tables (the paper's quotient-remainder trick)::

    x_i = W_q[i // c] * W_r[i mod c]     (``combine="mult"``, element-wise; the paper's default)
    x_i = W_q[i // c] + W_r[i mod c]     (``combine="add"``)

Storage: ``quotient`` float32 ``[ceil(V / c), D]`` and ``remainder`` float32 ``[c, D]``, so
``nbytes = (ceil(V / c) + c) * D * 4``; smallest at ``c ~ sqrt(V)``. No two ids share both rows,
so every id keeps a distinct vector (unlike the hashing trick). With ``c >= V`` (one quotient
row) and the quotient row set to the combine's identity, the remainder table is a dense table.

Special ids: padding (``padding_idx``, default 0) maps to exactly zero; the OOV id ``V - 1`` is
an ordinary id.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import EmbeddingTable, tensor_bytes
from ctrzip.nn.embedding.hashed import as_counts, check_ids, group_mean, not_padding
from ctrzip.nn.swappable import register_swappable

COMBINES = ("mult", "add")


@register_swappable
class QRTable(EmbeddingTable):
    """Quotient and remainder tables combined per id (see the module docstring).

    Args:
        num_embeddings: V (ids incl. padding and OOV).
        embedding_dim: D.
        collisions: c >= 1, the remainder table's rows (DLRM's ``qr_collisions``).
        combine: ``mult`` (element-wise product) or ``add``.
        padding_idx: id mapped to exactly zero (None: none).
        init_std: std of the random quotient rows; the remainder starts at the combine's
            identity (ones for ``mult``, zeros for ``add``) so a fresh table starts as a
            ``ceil(V / c)``-row table whose rows then separate by remainder.

    Raises:
        CompressionError: ``collisions < 1`` or an unknown ``combine`` (named in the message).

    Lookups take int32/int64 ids of any shape and return float32 ``[..., D]``.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        collisions: int,
        combine: str = "mult",
        padding_idx: int | None = 0,
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        if collisions < 1:
            raise CompressionError(f"qr: collisions must be >= 1, got {collisions}")
        if combine not in COMBINES:
            raise CompressionError(f"qr: combine must be one of {COMBINES}, got {combine!r}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.collisions, self.combine, self.padding_idx = collisions, combine, padding_idx
        nq = -(-num_embeddings // collisions)
        self.quotient = nn.Parameter(torch.randn(nq, embedding_dim) * init_std)
        start = torch.ones if combine == "mult" else torch.zeros
        self.remainder = nn.Parameter(start(collisions, embedding_dim))

    @staticmethod
    def bytes_for(num_embeddings: int, embedding_dim: int, collisions: int, itemsize: int = 4) -> int:
        """Stored bytes: ``(ceil(V / c) + c) * D * itemsize``."""
        return (-(-num_embeddings // collisions) + collisions) * embedding_dim * itemsize

    @classmethod
    def from_dense(
        cls,
        weight: Tensor,
        collisions: int,
        counts: Tensor | np.ndarray | None = None,
        combine: str = "mult",
        padding_idx: int | None = 0,
    ) -> QRTable:
        """Start from a trained table ``weight [V, D]``: each quotient row is the count-weighted
        mean of its ids' rows; the remainder is ones (``mult``) or, for ``add``, the
        count-weighted mean of the residuals of its ids (both exact least squares for that step)."""
        v, d = weight.shape
        table = cls(v, d, collisions, combine, padding_idx).to(weight.device)
        c = as_counts(counts, v, "qr")
        ids = torch.arange(v, device=weight.device)
        valid = not_padding(v, padding_idx, weight.device)
        q = group_mean(weight, ids // collisions, table.quotient.shape[0], c, valid)
        with torch.no_grad():
            table.quotient.copy_(q.to(weight.dtype))
            if combine == "add":
                resid = weight.detach().to(torch.float64) - q[ids // collisions]
                table.remainder.copy_(
                    group_mean(resid, ids % collisions, collisions, c, valid).to(weight.dtype)
                )
        return table

    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        check_ids(ids, self.num_embeddings, "qr table")
        x = ids.long()
        q = nn.functional.embedding(x // self.collisions, self.quotient)
        r = nn.functional.embedding(x % self.collisions, self.remainder)
        out = q * r if self.combine == "mult" else q + r
        if self.padding_idx is None:
            return out
        return out.masked_fill((ids == self.padding_idx).unsqueeze(-1), 0.0)

    def materialize(self) -> Tensor:
        with torch.no_grad():
            return self.forward(torch.arange(self.num_embeddings, device=self.quotient.device))

    def nbytes(self) -> int:
        return tensor_bytes(self.quotient, self.remainder)

    def bytes_at(self, rows: int) -> int:
        """Bytes at ``rows`` ids with the same ``collisions`` (DLRM's setting), for projecting a
        result to a larger vocabulary."""
        return self.bytes_for(rows, self.embedding_dim, self.collisions)

    def spec(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "collisions": self.collisions,
            "combine": self.combine,
            "padding_idx": self.padding_idx,
        }

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, collisions={self.collisions}, {self.combine}"


__all__ = ["COMBINES", "QRTable"]
