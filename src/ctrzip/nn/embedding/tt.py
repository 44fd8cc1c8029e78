"""``TTTable``: a Tensor-Train factorized table (TT-Rec, Yin et al., MLSys 2021).

Row id ``v`` is split into digits ``(i1, i2, i3)`` of ``n1 x n2 x n3 >= V`` and the vector
index into ``(j1, j2, j3)`` of ``d1 x d2 x d3 = D``; row ``v`` is the chained product of the
core slices ``G1[:, i1, :, :] G2[:, i2, :, :] G3[:, i3, :, :]``. Only the looked-up
(unique) ids are rebuilt, and gradients reach the cores, unlike the reference code that
rebuilt the whole table on every forward (reference-code-notes B.8).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ctrzip.nn.embedding.base import EmbeddingTable, tensor_bytes
from ctrzip.nn.swappable import register_swappable


def tt_row_factors(num_embeddings: int) -> list[int]:
    """Balanced ``[n1, n2, n3]`` with ``n1 * n2 * n3 >= V``."""
    n = max(1, math.ceil(num_embeddings ** (1 / 3) - 1e-9))
    n3 = max(1, math.ceil(num_embeddings / (n * n)))
    return [n, n, n3]


def tt_dim_factors(embedding_dim: int) -> list[int]:
    """``[d1, d2, d3]`` with product ``D``, as balanced as its prime factors allow."""
    primes, d, p = [], embedding_dim, 2
    while d > 1:
        while d % p == 0:
            primes.append(p)
            d //= p
        p += 1
    bins = [1, 1, 1]
    for q in sorted(primes, reverse=True):
        bins[bins.index(min(bins))] *= q
    return sorted(bins)


def tt_ranks(ns: list[int], ds: list[int], tt_rank: int) -> list[int]:
    """``[1, r1, r2, 1]``: ``tt_rank`` capped where an unfolding is smaller."""
    r1 = min(tt_rank, ns[0] * ds[0], ns[1] * ds[1] * ns[2] * ds[2])
    r2 = min(tt_rank, r1 * ns[1] * ds[1], ns[2] * ds[2])
    return [1, r1, r2, 1]


@register_swappable
class TTTable(EmbeddingTable):
    """Three TT cores ``[R0, n_i, d_i, R1]`` (end ranks 1) replacing a ``V x D`` table.

    Args:
        num_embeddings: V.
        embedding_dim: D.
        tt_rank: maximum inner TT-rank (TT-Rec uses 16); capped where the unfolding is smaller.
        row_factors: ``[n1, n2, n3]`` (default balanced, product >= V).
        dim_factors: ``[d1, d2, d3]`` (default from D's prime factors).
        padding_idx: id mapped to an exact zero vector (None = none).
        init_std: std of a random row at initialization (training from scratch).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        tt_rank: int = 16,
        row_factors: list[int] | None = None,
        dim_factors: list[int] | None = None,
        padding_idx: int | None = 0,
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        if tt_rank < 1:
            raise ValueError(f"tt_rank must be >= 1, got {tt_rank}")
        ns = list(row_factors) if row_factors is not None else tt_row_factors(num_embeddings)
        ds = list(dim_factors) if dim_factors is not None else tt_dim_factors(embedding_dim)
        if len(ns) != 3 or len(ds) != 3 or math.prod(ns) < num_embeddings or math.prod(ds) != embedding_dim:
            raise ValueError(
                f"row factors {ns} must cover V={num_embeddings}, dim factors {ds} multiply to D"
            )
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.tt_rank, self.padding_idx = tt_rank, padding_idx
        self.row_factors, self.dim_factors = ns, ds
        self.ranks = tt_ranks(ns, ds, tt_rank)
        r1, r2 = self.ranks[1], self.ranks[2]
        std = (init_std**2 / (r1 * r2)) ** (1 / 6)
        self.cores = nn.ParameterList(
            nn.Parameter(torch.randn(self.ranks[i], ns[i], ds[i], self.ranks[i + 1]) * std) for i in range(3)
        )

    @classmethod
    def from_dense(
        cls, table: Tensor, tt_rank: int = 16, padding_idx: int | None = 0, **factors: Any
    ) -> TTTable:
        """TT-SVD of a trained ``[V, D]`` table (exact when ``tt_rank`` reaches the full TT-ranks)."""
        v, d = table.shape
        tt = cls(v, d, tt_rank, padding_idx=padding_idx, **factors).to(table.device)
        (n1, n2, n3), (d1, d2, d3) = tt.row_factors, tt.dim_factors
        x = torch.zeros(n1 * n2 * n3, d, dtype=torch.float64, device=table.device)
        x[:v] = table.detach().to(torch.float64)
        t = x.reshape(n1, n2, n3, d1, d2, d3).permute(0, 3, 1, 4, 2, 5)  # [n1, d1, n2, d2, n3, d3]
        r1, r2 = tt.ranks[1], tt.ranks[2]
        u, s, vh = torch.linalg.svd(t.reshape(n1 * d1, -1), full_matrices=False)
        g1 = u[:, :r1].reshape(1, n1, d1, r1)
        rest = (s[:r1, None] * vh[:r1]).reshape(r1 * n2 * d2, n3 * d3)
        u, s, vh = torch.linalg.svd(rest, full_matrices=False)
        g2 = u[:, :r2].reshape(r1, n2, d2, r2)
        g3 = (s[:r2, None] * vh[:r2]).reshape(r2, n3, d3, 1)
        with torch.no_grad():
            for core, g in zip(tt.cores, (g1, g2, g3), strict=True):
                core.copy_(g.to(table.dtype))
        return tt

    def _rows(self, ids: Tensor) -> Tensor:  # [U] -> [U, D]
        n2, n3 = self.row_factors[1], self.row_factors[2]
        i1, i2, i3 = ids // (n2 * n3), (ids // n3) % n2, ids % n3
        g1, g2, g3 = self.cores
        a = g1[0, i1]  # [U, d1, r1]
        b = g2[:, i2].permute(1, 0, 2, 3)  # [U, r1, d2, r2]
        ab = torch.einsum("uxr,urys->uxys", a, b).reshape(ids.shape[0], -1, self.ranks[2])  # [U, d1 d2, r2]
        c = g3[:, i3, :, 0].permute(1, 0, 2)  # [U, r2, d3]
        return torch.einsum("uxr,ury->uxy", ab, c).reshape(ids.shape[0], self.embedding_dim)

    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        flat = ids.reshape(-1).long()
        uniq, inverse = torch.unique(flat, return_inverse=True)
        out = self._rows(uniq)[inverse]
        if self.padding_idx is not None:
            out = out * (flat != self.padding_idx).unsqueeze(-1).to(out.dtype)
        return out.reshape(*ids.shape, self.embedding_dim)

    def materialize(self) -> Tensor:
        with torch.no_grad():
            return self(torch.arange(self.num_embeddings, device=self.cores[0].device))

    def nbytes(self) -> int:
        return tensor_bytes(*self.cores)

    def bytes_at(self, rows: int) -> int:
        """Bytes of the same TT layout (balanced row factors, same dim factors and ``tt_rank``)
        at ``rows`` ids, for projecting a result to a larger vocabulary. At the table's own
        ``num_embeddings`` with default row factors this is ``nbytes()``."""
        ns = tt_row_factors(rows) if rows != self.num_embeddings else self.row_factors
        r = tt_ranks(ns, self.dim_factors, self.tt_rank)
        size = self.cores[0].element_size()
        return size * sum(r[i] * ns[i] * self.dim_factors[i] * r[i + 1] for i in range(3))

    def spec(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "tt_rank": self.tt_rank,
            "row_factors": list(self.row_factors),
            "dim_factors": list(self.dim_factors),
            "padding_idx": self.padding_idx,
        }

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, ranks={self.ranks}, rows={self.row_factors}"
