"""``HashedTable``: the hashing trick (Weinberger et al., ICML 2009), the first baseline a
practitioner tries: ids are hashed into ``B < V`` buckets that share rows.

Row of id ``i`` (the paper's hashed feature map with one hash and no sign hash)::

    x_i = W[h(i)],   h(i) = ((a * i + b) mod P) mod B     (``hash="universal"``, P = 2^31 - 1)
                     h(i) = i mod B                       (``hash="identity"``)

``a`` in [1, P) and ``b`` in [0, P) are drawn once from ``seed`` (Carter-Wegman universal
hashing) and are part of the spec, not learned. Storage: ``weight`` float32 ``[B, D]``, so
``nbytes = B * D * 4``; the two hash constants live in the manifest (``spec``), not in the
weights. With ``hash="identity"`` and ``B >= V`` every id has its own row: a dense table.

Special ids: the padding id (``padding_idx``, default 0) maps to exactly zero whatever bucket
it hashes to; the OOV id ``V - 1`` is an ordinary id (it shares its bucket like any other).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import EmbeddingTable, tensor_bytes
from ctrzip.nn.swappable import register_swappable

PRIME = 2**31 - 1  # Mersenne prime > any id; a * id < 2^62 fits int64
HASHES = ("universal", "identity")


def universal_constants(seed: int, n: int = 1) -> list[tuple[int, int]]:
    """``n`` pairs ``(a, b)``, ``a`` in [1, P), ``b`` in [0, P), drawn from ``seed`` (any platform)."""
    rng = random.Random(seed)
    return [(rng.randrange(1, PRIME), rng.randrange(0, PRIME)) for _ in range(n)]


def group_mean(
    weight: Tensor, group: Tensor, num_groups: int, counts: Tensor | None, valid: Tensor
) -> Tensor:
    """Count-weighted mean of the rows of ``weight [V, D]`` in each group (``group [V]`` long).

    The count-weighted mean is the vector that minimizes the frequency-weighted squared error of
    the rows forced to share it. Rows with ``valid`` False (padding) are left out; a group whose
    rows all have count 0 takes their plain mean; an empty group is zero. Returns float64
    ``[num_groups, D]``.
    """
    x = weight.detach().to(torch.float64) * valid.unsqueeze(1)
    one = valid.to(torch.float64)
    w = one if counts is None else counts.to(x.device, torch.float64) * one
    d = x.shape[1]
    sw = torch.zeros(num_groups, d, dtype=torch.float64, device=x.device).index_add_(0, group, x * w[:, None])
    tw = torch.zeros(num_groups, dtype=torch.float64, device=x.device).index_add_(0, group, w)
    su = torch.zeros(num_groups, d, dtype=torch.float64, device=x.device).index_add_(0, group, x)
    tu = torch.zeros(num_groups, dtype=torch.float64, device=x.device).index_add_(0, group, one)
    by_count = sw / tw.clamp_min(1e-300)[:, None]
    plain = su / tu.clamp_min(1.0)[:, None]
    return torch.where((tw > 0)[:, None], by_count, plain)


def as_counts(counts: Tensor | np.ndarray | None, v: int, where: str) -> Tensor | None:
    """``counts`` as a float64 tensor ``[V]`` (None stays None).

    Raises:
        CompressionError: wrong shape or a negative count (the message names ``where``).
    """
    if counts is None:
        return None
    c = torch.as_tensor(np.asarray(counts) if isinstance(counts, np.ndarray) else counts).to(torch.float64)
    if c.shape != (v,):
        raise CompressionError(f"{where}: counts must have shape [{v}] (one per id), got {tuple(c.shape)}")
    if bool((c < 0).any()):
        raise CompressionError(f"{where}: counts must be >= 0")
    return c


def check_ids(ids: Tensor, v: int, where: str) -> None:
    """Raise ``IndexError`` when an id lies outside ``[0, V)`` (a hash would silently accept it)."""
    if ids.numel():
        lo, hi = torch.aminmax(ids)
        if int(lo) < 0 or int(hi) >= v:
            raise IndexError(f"{where}: ids must lie in [0, {v}), got [{int(lo)}, {int(hi)}]")


def not_padding(v: int, padding_idx: int | None, device: torch.device | str = "cpu") -> Tensor:
    """``[V]`` bool, False at the padding id."""
    valid = torch.ones(v, dtype=torch.bool, device=device)
    if padding_idx is not None:
        valid[padding_idx] = False
    return valid


@register_swappable
class HashedTable(EmbeddingTable):
    """``B`` shared rows; id ``i`` reads row ``h(i)`` (see the module docstring).

    Args:
        num_embeddings: V (ids incl. padding and OOV).
        embedding_dim: D.
        num_buckets: B >= 1 rows stored.
        hash: ``universal`` (``((a i + b) mod P) mod B``) or ``identity`` (``i mod B``).
        seed: draws ``a`` and ``b`` (universal hash only).
        padding_idx: id mapped to exactly zero (None: none).
        init_std: std of the random rows (training from scratch).

    Raises:
        CompressionError: ``num_buckets < 1`` or an unknown ``hash`` (named in the message).

    Lookups take int32/int64 ids of any shape and return float32 ``[..., D]``.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        num_buckets: int,
        hash: str = "universal",  # noqa: A002  (the setting's name)
        seed: int = 0,
        padding_idx: int | None = 0,
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        if num_buckets < 1:
            raise CompressionError(f"hashing: num_buckets must be >= 1, got {num_buckets}")
        if hash not in HASHES:
            raise CompressionError(f"hashing: hash must be one of {HASHES}, got {hash!r}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.num_buckets, self.hash, self.seed, self.padding_idx = num_buckets, hash, seed, padding_idx
        self.a, self.b = universal_constants(seed)[0]
        self.weight = nn.Parameter(torch.randn(num_buckets, embedding_dim) * init_std)

    @staticmethod
    def bytes_for(num_buckets: int, embedding_dim: int, itemsize: int = 4) -> int:
        """Stored bytes: ``B * D * itemsize``."""
        return num_buckets * embedding_dim * itemsize

    @classmethod
    def from_dense(
        cls,
        weight: Tensor,
        num_buckets: int,
        counts: Tensor | np.ndarray | None = None,
        hash: str = "universal",  # noqa: A002
        seed: int = 0,
        padding_idx: int | None = 0,
    ) -> HashedTable:
        """Each bucket starts at the count-weighted mean of the trained rows ``weight [V, D]``
        hashed into it (``group_mean``; uniform weights when ``counts`` is None)."""
        v, d = weight.shape
        table = cls(v, d, num_buckets, hash, seed, padding_idx).to(weight.device)
        c = as_counts(counts, v, "hashing")
        ids = torch.arange(v, device=weight.device)
        rows = group_mean(
            weight, table.bucket(ids), num_buckets, c, not_padding(v, padding_idx, weight.device)
        )
        with torch.no_grad():
            table.weight.copy_(rows.to(weight.dtype))
        return table

    def bucket(self, ids: Tensor) -> Tensor:
        """Bucket of each id (int64, same shape)."""
        x = ids.long()
        if self.hash == "identity":
            return x % self.num_buckets
        return ((x * self.a + self.b) % PRIME) % self.num_buckets

    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        check_ids(ids, self.num_embeddings, "hashed table")
        out = nn.functional.embedding(self.bucket(ids), self.weight)
        if self.padding_idx is None:
            return out
        return out.masked_fill((ids == self.padding_idx).unsqueeze(-1), 0.0)

    def materialize(self) -> Tensor:
        with torch.no_grad():
            return self.forward(torch.arange(self.num_embeddings, device=self.weight.device))

    def nbytes(self) -> int:
        return tensor_bytes(self.weight)

    def bytes_at(self, rows: int) -> int:
        """Bytes at ``rows`` ids with the same load factor ``V / B`` (``ceil(B rows / V)`` buckets),
        for projecting a result to a larger vocabulary."""
        return self.bytes_for(max(1, -(-self.num_buckets * rows // self.num_embeddings)), self.embedding_dim)

    def spec(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "num_buckets": self.num_buckets,
            "hash": self.hash,
            "seed": self.seed,
            "padding_idx": self.padding_idx,
        }

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, buckets={self.num_buckets}, hash={self.hash}"


__all__ = ["HashedTable", "as_counts", "check_ids", "group_mean", "not_padding", "universal_constants"]
