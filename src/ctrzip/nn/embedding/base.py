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


def _zero_padding_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    """A loaded state cannot make the padding id non-zero (load_state_dict post hook)."""
    pad = getattr(module, "padding_idx", None)
    if pad is not None:
        with torch.no_grad():
            module.weight[pad].zero_()  # type: ignore[index]


@register_swappable
class DenseTable(EmbeddingTable):
    """A plain float table (the uncompressed baseline).

    Args:
        num_embeddings: rows (vocab size incl. padding and OOV).
        embedding_dim: D.
        init_std: normal init std (FuxiCTR's default 1e-4 keeps early logits near 0).
        padding_idx: id that always maps to an exact zero vector (0 = missing, as in the id
            layout): its row starts at zero, gets no gradient (so no optimizer moves it) and is
            zeroed again by ``from_tensor`` and after every ``load_state_dict``; ``materialize``
            returns zero there. Lookups are not masked: a mask per lookup doubled the cost of
            every dense-table forward (measured 37 of 117 s of evaluation), so only an in-place
            edit of ``weight`` between loads could make the row non-zero.
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
        self.register_load_state_dict_post_hook(_zero_padding_after_load)

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
        return nn.functional.embedding(ids, self.weight, padding_idx=self.padding_idx)

    def materialize(self) -> Tensor:
        w = self.weight.detach()
        if self.padding_idx is not None and bool(w[self.padding_idx].any()):
            w = w.clone()  # only when the stored row was edited: the table's value there is 0
            w[self.padding_idx] = 0
        return w

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
