"""``MixedDimTable``: DLRM's mixed-dimension embeddings (Ginart et al., "Mixed Dimension
Embeddings with Application to Memory-Efficient Recommendation Systems", ISIT 2021).

The ids of a field are split into popularity blocks; block ``k`` stores its rows at its own
dimension ``d_k`` and a projection ``P_k`` up to the common ``D``::

    x_i = E_k[i - s_k] @ P_k        for s_k <= i < s_{k+1}      (no P_k when d_k = D)

Ids are sorted by descending training frequency (the encoder's layout), so a block is an id
range. The paper's power-law dimension rule (its alpha-rule) gives each block
``d_k = lambda * p_k ** alpha`` (rounded down, clamped to ``[1, D]``), ``p_k`` the block's mean
count per id, ``alpha`` in [0, 1] the temperature (0: one dimension for all blocks), and
``lambda`` the largest scale whose table fits the byte budget (``power_law_dims``), or set by
the head block's dimension ``d_0`` (DLRM's ``md_base_dim``).

Storage: ``blocks.k`` float32 ``[n_k, d_k]`` and ``projections.k`` float32 ``[d_k, D]`` for
blocks with ``d_k < D``: ``nbytes = 4 * sum_k (n_k d_k + [d_k < D] d_k D)``.

Special ids: padding (``padding_idx``, default 0) maps to exactly zero; the OOV id ``V - 1``
is an ordinary id of the last (rarest) block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import EmbeddingTable, tensor_bytes
from ctrzip.nn.embedding.hashed import as_counts
from ctrzip.nn.swappable import register_swappable


def geometric_edges(num_embeddings: int, num_blocks: int) -> list[int]:
    """Block boundaries ``[0, e_1, ..., V]`` with geometrically growing blocks: ``e_k =
    round(V ** (k / K))`` (duplicates dropped, so fewer blocks when V is small; the head block
    holds at least one id besides padding)."""
    v = num_embeddings
    inner = {max(2, round(v ** (k / num_blocks))) for k in range(1, num_blocks)}
    return [0, *sorted(e for e in inner if e < v), v]


def block_bytes(edges: Sequence[int], dims: Sequence[int], embedding_dim: int, itemsize: int = 4) -> int:
    """Stored bytes of a ``MixedDimTable``: ``sum_k (n_k d_k + [d_k < D] d_k D) * itemsize``."""
    total = 0
    for k, d in enumerate(dims):
        n = edges[k + 1] - edges[k]
        total += n * d + (d * embedding_dim if d < embedding_dim else 0)
    return total * itemsize


def block_popularity(
    counts: Tensor | np.ndarray, edges: Sequence[int], padding_idx: int | None
) -> list[float]:
    """Mean training count per id of each block (the padding id left out)."""
    c = as_counts(counts, edges[-1], "mixed_dim").clone()  # type: ignore[union-attr]
    if padding_idx is not None:
        c[padding_idx] = 0
    out = []
    for k in range(len(edges) - 1):
        n = edges[k + 1] - edges[k] - int(padding_idx is not None and edges[k] <= padding_idx < edges[k + 1])
        out.append(float(c[edges[k] : edges[k + 1]].sum()) / max(1, n))
    return out


def _dims(scale: float, pop: Sequence[float], alpha: float, d_max: int) -> list[int]:
    return [min(d_max, max(1, math.floor(scale * p**alpha + 1e-9))) for p in pop]


def power_law_dims(
    popularity: Sequence[float],
    edges: Sequence[int],
    embedding_dim: int,
    alpha: float,
    *,
    target_bytes: int | None = None,
    base_dim: int | None = None,
    itemsize: int = 4,
) -> list[int] | None:
    """Block dimensions by the alpha-rule ``d_k = floor(lambda * p_k ** alpha)`` in ``[1, D]``.

    Exactly one of ``target_bytes`` (the largest ``lambda`` whose ``block_bytes`` fit; every
    value of ``lambda`` where some ``d_k`` steps is tried, so the answer is exact) or
    ``base_dim`` (``lambda = base_dim / p_0 ** alpha``: the head block gets ``base_dim``).
    Returns None when even all-ones dimensions exceed ``target_bytes``.
    """
    pop = [max(p, 1e-12) for p in popularity]  # a block never seen still gets dimension 1
    if base_dim is not None:
        return _dims(base_dim / pop[0] ** alpha, pop, alpha, embedding_dim)
    assert target_bytes is not None
    scales = sorted({j / p**alpha for p in pop for j in range(1, embedding_dim + 1)})
    best = None
    for s in scales:  # the bytes are not monotone in lambda (a block reaching D drops its projection)
        dims = _dims(s, pop, alpha, embedding_dim)
        if block_bytes(edges, dims, embedding_dim, itemsize) <= target_bytes:
            best = dims
    return best


@register_swappable
class MixedDimTable(EmbeddingTable):
    """Id-range blocks stored at their own dimension and projected to ``D`` (module docstring).

    Args:
        num_embeddings: V (ids incl. padding and OOV).
        embedding_dim: D.
        edges: block boundaries ``[0, e_1, ..., V]``, strictly increasing.
        dims: ``d_k`` per block, each in ``[1, D]``.
        padding_idx: id mapped to exactly zero (None: none).
        init_std: std of random rows (training from scratch); projections start orthonormal-ish
            (``N(0, 1/d_k)``), so a row's scale survives the projection.

    Raises:
        CompressionError: edges that do not tile ``[0, V)`` or a dimension outside ``[1, D]``
            (the message names the block).

    Lookups take int32/int64 ids of any shape and return float32 ``[..., D]``; an id outside
    ``[0, V)`` raises ``IndexError``.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        edges: Sequence[int],
        dims: Sequence[int],
        padding_idx: int | None = 0,
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        edges, dims = [int(e) for e in edges], [int(d) for d in dims]
        if len(edges) < 2 or edges[0] != 0 or edges[-1] != num_embeddings:
            raise CompressionError(f"mixed_dim: edges must run from 0 to V={num_embeddings}, got {edges}")
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise CompressionError(f"mixed_dim: edges must be strictly increasing, got {edges}")
        if len(dims) != len(edges) - 1:
            raise CompressionError(f"mixed_dim: {len(edges) - 1} blocks need as many dims, got {dims}")
        for k, d in enumerate(dims):
            if not 1 <= d <= embedding_dim:
                raise CompressionError(f"mixed_dim: block {k} dim must be in [1, {embedding_dim}], got {d}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.edges, self.dims, self.padding_idx = edges, dims, padding_idx
        self.blocks = nn.ParameterList(
            nn.Parameter(torch.randn(b - a, d) * init_std)
            for a, b, d in zip(edges, edges[1:], dims, strict=False)
        )
        self.projections = nn.ParameterDict(
            {
                str(k): nn.Parameter(torch.randn(d, embedding_dim) / d**0.5)
                for k, d in enumerate(dims)
                if d < embedding_dim
            }
        )
        self.register_buffer("_bounds", torch.tensor(edges[1:-1], dtype=torch.long), persistent=False)

    @classmethod
    def from_dense(
        cls, weight: Tensor, edges: Sequence[int], dims: Sequence[int], padding_idx: int | None = 0
    ) -> MixedDimTable:
        """Best rank-``d_k`` fit of each block of a trained table ``weight [V, D]`` (truncated
        SVD: ``E_k = U S``, ``P_k = V^T``); exact for blocks with ``d_k = D``."""
        v, d = weight.shape
        table = cls(v, d, edges, dims, padding_idx).to(weight.device)
        w = weight.detach().to(torch.float64).clone()
        if padding_idx is not None:
            w[padding_idx] = 0  # its value is zero whatever is stored: do not spend rank on it
        with torch.no_grad():
            for k, (a, b) in enumerate(zip(table.edges, table.edges[1:], strict=False)):
                dk, rows = table.dims[k], w[a:b]
                if dk == d:
                    table.blocks[k].copy_(rows.to(weight.dtype))
                    continue
                u, s, vh = torch.linalg.svd(rows, full_matrices=False)
                r = min(dk, s.numel())
                e = torch.zeros(b - a, dk, dtype=torch.float64, device=w.device)
                p = torch.zeros(dk, d, dtype=torch.float64, device=w.device)
                e[:, :r], p[:r] = u[:, :r] * s[:r], vh[:r]
                table.blocks[k].copy_(e.to(weight.dtype))
                table.projections[str(k)].copy_(p.to(weight.dtype))
        return table

    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        flat = ids.reshape(-1).long().contiguous()
        if flat.numel():
            lo, hi = torch.aminmax(flat)
            if int(lo) < 0 or int(hi) >= self.num_embeddings:
                raise IndexError(
                    f"mixed_dim table: ids must lie in [0, {self.num_embeddings}), got [{int(lo)}, {int(hi)}]"
                )
        which = torch.bucketize(flat, self._bounds, right=True)  # block of each id
        dtype = self.blocks[0].dtype
        out = torch.zeros(flat.numel(), self.embedding_dim, dtype=dtype, device=flat.device)
        for k, (a, block) in enumerate(zip(self.edges, self.blocks, strict=False)):
            sel = (which == k).nonzero().squeeze(1)
            if not sel.numel():
                continue
            rows = block[flat[sel] - a]  # [n, d_k]
            if str(k) in self.projections:
                rows = rows @ self.projections[str(k)]  # [n, D]
            out = out.index_copy(0, sel, rows)
        if self.padding_idx is not None:
            out = out.masked_fill((flat == self.padding_idx).unsqueeze(-1), 0.0)
        return out.reshape(*ids.shape, self.embedding_dim)

    def materialize(self) -> Tensor:
        with torch.no_grad():
            return self.forward(torch.arange(self.num_embeddings, device=self.blocks[0].device))

    def nbytes(self) -> int:
        return tensor_bytes(*self.blocks, *self.projections.values())

    def bytes_at(self, rows: int) -> int:
        """Bytes at ``rows`` ids with each block keeping its share of the ids (at least one id)
        and its dimension, for projecting a result to a larger vocabulary. Conservative: at a
        larger vocabulary the popular head is a smaller share of the ids."""
        v = self.num_embeddings
        edges = [0]
        for a, b in zip(self.edges, self.edges[1:], strict=False):
            edges.append(edges[-1] + max(1, round((b - a) * rows / v)))
        return block_bytes(edges, self.dims, self.embedding_dim)

    def spec(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "edges": list(self.edges),
            "dims": list(self.dims),
            "padding_idx": self.padding_idx,
        }

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, edges={self.edges}, dims={self.dims}"


__all__ = ["MixedDimTable", "block_bytes", "block_popularity", "geometric_edges", "power_law_dims"]
