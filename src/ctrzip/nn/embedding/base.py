"""The embedding seam: every model gets field vectors from a ``FieldEmbedding`` whose
per-field tables implement ``EmbeddingTable``. Compression swaps tables, never models.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import Tensor, nn

from ctrzip.nn.swappable import register_swappable


class EmbeddingTable(nn.Module, abc.ABC):
    """One field's table: ids -> vectors.

    Implementations (dense, PQ-coded, low-rank, hashed, TT, int8) must accept int32 or
    int64 ids of any shape and return ``[..., embedding_dim]``.
    """

    num_embeddings: int
    embedding_dim: int

    @abc.abstractmethod
    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        ...

    @abc.abstractmethod
    def materialize(self) -> Tensor:
        """The full ``[N, D]`` table this module represents (for refits, parity tests, export)."""

    @abc.abstractmethod
    def nbytes(self) -> int:
        """Honest storage size in bytes: every parameter and buffer the table needs."""

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


def tensor_bytes(*tensors: Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@register_swappable
class DenseTable(EmbeddingTable):
    """A plain float table (the uncompressed baseline).

    Args:
        num_embeddings: rows (vocab size incl. padding and OOV).
        embedding_dim: D.
        init_std: normal init std (FuxiCTR's default 1e-4 keeps early logits near 0).
        padding_idx: row kept at zero with no gradient (0 = missing, as in the id layout).
    """

    def __init__(
        self, num_embeddings: int, embedding_dim: int, init_std: float = 1e-4, padding_idx: int | None = 0
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim))
        nn.init.normal_(self.weight, std=init_std)
        if padding_idx is not None:
            with torch.no_grad():
                self.weight[padding_idx].zero_()

    @classmethod
    def from_tensor(cls, weight: Tensor, padding_idx: int | None = 0) -> DenseTable:
        table = cls(weight.shape[0], weight.shape[1], padding_idx=padding_idx)
        with torch.no_grad():
            table.weight.copy_(weight)
        return table

    def forward(self, ids: Tensor) -> Tensor:
        return nn.functional.embedding(ids, self.weight, padding_idx=self.padding_idx)

    def materialize(self) -> Tensor:
        return self.weight.detach()

    def nbytes(self) -> int:
        return tensor_bytes(self.weight)

    def spec(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "padding_idx": self.padding_idx,
        }

    @classmethod
    def empty(cls, **spec: Any) -> DenseTable:
        return cls(**spec)
