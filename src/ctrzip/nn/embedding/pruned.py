"""``PrunedTable``: magnitude pruning of a table's elements or rows, stored sparse.

The classic baseline (Han et al., "Learning both Weights and Connections for Efficient Neural
Networks", NeurIPS 2015, section 3: drop the weights of smallest magnitude ``|w|``, then
retrain the rest with the pattern fixed). Pruned entries are exactly zero.

Storage formats (what is saved, so what ``nbytes`` counts):

* ``granularity="element"``, CSR: ``row_ptr`` int32 ``[V + 1]`` (row ``i``'s entries are
  ``row_ptr[i]:row_ptr[i+1]``), ``col_idx`` uint8 (``D <= 256``) or int16 ``[nnz]`` and
  ``values`` float32 ``[nnz]``: ``nbytes = 4 (V + 1) + nnz (c + 4)``, ``c`` the ``col_idx``
  item size. Smaller than the dense ``4 V D`` only below ``(4 D - 4) / (c + 4)`` kept entries
  per row (about 80 % sparsity at D = 16 with uint8 columns).
* ``granularity="row"``: ``kept_ids`` int32 ``[R]`` (sorted) and ``rows`` float32 ``[R, D]``;
  a pruned row (an id not in ``kept_ids``) is zero: ``nbytes = 4 R + 4 R D``. Rows are ranked
  by L2 norm.

The padding row is never stored (it is zero anyway); the OOV id ``V - 1`` is an ordinary id
(pruned if it is small). ``values`` / ``rows`` are trainable, the pattern is fixed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import EmbeddingTable, tensor_bytes
from ctrzip.nn.embedding.hashed import check_ids
from ctrzip.nn.swappable import register_swappable

GRANULARITIES = ("element", "row")


def col_dtype(embedding_dim: int) -> torch.dtype:
    """Column index type of the CSR format: uint8 up to 256 columns, else int16.

    Raises:
        CompressionError: ``D > 32767`` (int16 cannot index it).
    """
    if embedding_dim <= 256:
        return torch.uint8
    if embedding_dim <= 32767:
        return torch.int16
    raise CompressionError(f"prune: element pruning supports D <= 32767, got {embedding_dim}")


def pruned_bytes(num_embeddings: int, embedding_dim: int, granularity: str, kept: int) -> int:
    """Stored bytes with ``kept`` entries (``nnz`` for ``element``, ``R`` rows for ``row``)."""
    if granularity == "row":
        return 4 * kept + 4 * kept * embedding_dim
    c = torch.empty(0, dtype=col_dtype(embedding_dim)).element_size()
    return 4 * (num_embeddings + 1) + kept * (c + 4)


def max_kept(num_embeddings: int, embedding_dim: int, granularity: str, target_bytes: int) -> int:
    """The most entries (``element``) or rows (``row``) whose ``pruned_bytes`` fit ``target_bytes``
    (may be <= 0 when even an empty table does not fit)."""
    if granularity == "row":
        return target_bytes // (4 + 4 * embedding_dim)
    c = torch.empty(0, dtype=col_dtype(embedding_dim)).element_size()
    return (target_bytes - 4 * (num_embeddings + 1)) // (c + 4)


@register_swappable
class PrunedTable(EmbeddingTable):
    """A magnitude-pruned table in CSR (elements) or kept-rows (rows) form (module docstring).

    Args:
        num_embeddings: V (ids incl. padding and OOV).
        embedding_dim: D.
        granularity: ``element`` or ``row``.
        kept: nnz (``element``) or R (``row``), the stored entries; >= 0.
        padding_idx: id mapped to exactly zero (None: none).

    Raises:
        CompressionError: an unknown ``granularity`` or ``kept`` out of range (named).

    Lookups take int32/int64 ids of any shape and return float32 ``[..., D]``; an id outside
    ``[0, V)`` raises ``IndexError``.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        granularity: str,
        kept: int,
        padding_idx: int | None = 0,
    ) -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise CompressionError(f"prune: granularity must be one of {GRANULARITIES}, got {granularity!r}")
        limit = num_embeddings * (embedding_dim if granularity == "element" else 1)
        if not 0 <= kept <= limit:
            raise CompressionError(
                f"prune: kept must be in [0, {limit}] for {granularity} pruning, got {kept}"
            )
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.granularity, self.kept, self.padding_idx = granularity, kept, padding_idx
        if granularity == "element":
            self.register_buffer("row_ptr", torch.zeros(num_embeddings + 1, dtype=torch.int32))
            self.register_buffer("col_idx", torch.zeros(kept, dtype=col_dtype(embedding_dim)))
            self.values = nn.Parameter(torch.zeros(kept))
        else:
            self.register_buffer("kept_ids", torch.zeros(kept, dtype=torch.int32))
            self.rows = nn.Parameter(torch.zeros(kept, embedding_dim))

    @classmethod
    def from_dense(
        cls, weight: Tensor, granularity: str, kept: int, padding_idx: int | None = 0
    ) -> PrunedTable:
        """Keep the ``kept`` entries (or rows, by L2 norm) of largest magnitude of ``weight [V, D]``
        (the padding row is never kept; ties broken by position). ``kept`` is capped at what the
        non-padding part holds, so keeping everything reproduces the dense table exactly."""
        v, d = weight.shape
        w = weight.detach()
        score = w.abs() if granularity == "element" else w.norm(dim=1, keepdim=True)
        score = score.to(torch.float64)
        if padding_idx is not None:
            score[padding_idx] = -1.0  # below every real magnitude: never kept
        real = (v - (padding_idx is not None)) * (d if granularity == "element" else 1)
        kept = min(kept, real)
        # stable order: largest magnitude first, the lower flat index first among ties
        order = torch.sort(score.reshape(-1), descending=True, stable=True).indices[:kept]
        idx = torch.sort(order).values
        table = cls(v, d, granularity, kept, padding_idx).to(weight.device)
        with torch.no_grad():
            if granularity == "element":
                rows, cols = idx // d, idx % d
                table.row_ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=v), 0).to(torch.int32)
                table.col_idx.copy_(cols.to(table.col_idx.dtype))
                table.values.copy_(w.reshape(-1)[idx])
            else:
                table.kept_ids.copy_(idx.to(torch.int32))
                table.rows.copy_(w[idx])
        return table

    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        check_ids(ids, self.num_embeddings, "pruned table")
        flat = ids.reshape(-1).long()
        n, d = flat.numel(), self.embedding_dim
        if self.granularity == "element":
            start = self.row_ptr[flat].long()
            length = self.row_ptr[flat + 1].long() - start  # [N] stored entries of each looked-up row
            which = torch.repeat_interleave(torch.arange(n, device=flat.device), length)
            first = torch.cumsum(length, 0) - length  # offset of each row's entries in the gather
            pos = start[which] + torch.arange(which.numel(), device=flat.device) - first[which]
            out = torch.zeros(n, d, dtype=self.values.dtype, device=flat.device)
            out = out.index_put((which, self.col_idx[pos].long()), self.values[pos])
        elif self.kept == 0:
            out = torch.zeros(n, d, dtype=self.rows.dtype, device=flat.device) + 0 * self.rows.sum()
        else:
            pos = torch.searchsorted(self.kept_ids, flat.to(torch.int32)).clamp_max(self.kept - 1)
            hit = self.kept_ids[pos].long() == flat
            out = self.rows[pos] * hit.unsqueeze(1).to(self.rows.dtype)
        if self.padding_idx is not None:
            out = out.masked_fill((flat == self.padding_idx).unsqueeze(-1), 0.0)
        return out.reshape(*ids.shape, d)

    def materialize(self) -> Tensor:
        device = self.values.device if self.granularity == "element" else self.rows.device
        with torch.no_grad():
            return self.forward(torch.arange(self.num_embeddings, device=device))

    def nbytes(self) -> int:
        if self.granularity == "element":
            return tensor_bytes(self.row_ptr, self.col_idx, self.values)
        return tensor_bytes(self.kept_ids, self.rows)

    def bytes_at(self, rows: int) -> int:
        """Bytes at ``rows`` ids with the same density (``round(kept rows / V)`` entries or rows),
        for projecting a result to a larger vocabulary."""
        kept = round(self.kept * rows / self.num_embeddings)
        return pruned_bytes(rows, self.embedding_dim, self.granularity, kept)

    def density(self) -> float:
        """Stored entries over ``V * D`` (element) or stored rows over ``V`` (row)."""
        return self.kept / (
            self.num_embeddings * (self.embedding_dim if self.granularity == "element" else 1)
        )

    def spec(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "granularity": self.granularity,
            "kept": self.kept,
            "padding_idx": self.padding_idx,
        }

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.granularity}, kept={self.kept}"


__all__ = ["GRANULARITIES", "PrunedTable", "col_dtype", "max_kept", "pruned_bytes"]
