"""The embedding seam: every model gets field vectors from a ``FieldEmbedding`` whose
per-field tables implement ``EmbeddingTable``. Compression swaps tables, never models.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ctrzip.nn.swappable import register_swappable

if TYPE_CHECKING:
    from ctrzip.nn.embedding.fused import TableGroup


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

    @classmethod
    def empty(cls, **spec: Any) -> EmbeddingTable:
        """A table of the shape ``spec`` describes, weights to be loaded: the artifact loader's
        constructor. Tables whose ``__init__`` takes their ``spec()`` as is inherit this one."""
        return cls(**spec)

    @abc.abstractmethod
    def nbytes(self) -> int:
        """Honest storage size in bytes: every parameter and buffer the table needs."""

    def group_class(self) -> type[TableGroup] | None:
        """The ``TableGroup`` subclass that can pack this table with others for one fused
        lookup (``ctrzip.nn.embedding.fused``), or None (default): looked up on its own."""
        return None

    def group_key(self) -> Hashable:
        """Tables with the same ``group_class()`` and equal keys may be packed together
        (e.g. ``(dim, dtype, device, padding_idx)``); read at every lookup, so it must be cheap."""
        return (self.embedding_dim,)

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
        padding_idx: id that always maps to an exact zero vector (0 = missing, as in the id
            layout): its row gets no gradient and lookups of it are masked, so a row set by
            ``from_tensor``, a loaded state or an in-place edit never leaks.
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
        table = table.to(device=weight.device)
        with torch.no_grad():
            table.weight.copy_(weight)
            if padding_idx is not None:
                table.weight[padding_idx].zero_()
        return table

    def forward(self, ids: Tensor) -> Tensor:
        out = nn.functional.embedding(ids, self.weight, padding_idx=self.padding_idx)
        if self.padding_idx is None:
            return out
        return out.masked_fill((ids == self.padding_idx).unsqueeze(-1), 0.0)

    def materialize(self) -> Tensor:
        w = self.weight.detach()
        if self.padding_idx is not None and bool(w[self.padding_idx].any()):
            w = w.clone()  # only when the stored row was edited: the table's value there is 0
            w[self.padding_idx] = 0
        return w

    def nbytes(self) -> int:
        return tensor_bytes(self.weight)

    def group_class(self) -> type[TableGroup] | None:
        if type(self) is not DenseTable:  # a subclass may compute something else
            return None
        from ctrzip.nn.embedding.fused import DenseTableGroup

        return DenseTableGroup

    def group_key(self) -> Hashable:
        w = self.weight
        return (self.embedding_dim, w.dtype, w.device, self.padding_idx, w.requires_grad)

    def spec(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "padding_idx": self.padding_idx,
        }
