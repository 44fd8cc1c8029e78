"""``CCETable``: clustered compositional embeddings (Tsang & Ahle, "Clustering the Sketch:
Dynamic Compression for Embedding Tables", NeurIPS 2023), written from the paper.

The vector is split into ``c`` chunks of ``D / c`` columns (the compositional part, as in
product quantization). Chunk ``j`` of id ``i`` is the sum of two rows of ``k``-row tables
(the paper's CCE algorithm)::

    x_i[j] = C_j[a_j(i)] + H_j[g_j(i)]

``a_j`` is a stored index: a random hash at the start (then CCE is a two-hash sketch), replaced
by k-means cluster assignments each time the method re-clusters (``set_clusters``: ``C_j``
becomes the centroids of the current chunk vectors, ``H_j`` restarts at zero under a fresh
universal hash ``g_j``). The paper proves this alternation converges to the optimal codebook
for least squares. The k-means itself lives in the method (``compression.baselines.cce``).

Storage: ``assign`` ``[V, c]`` (uint8 for ``k <= 256``, int16 up to 32768, else int32),
``clustered`` and ``hashed`` float32 ``[c, k, D / c]``:
``nbytes = V c s + 2 k D 4`` with ``s`` the index item size. The hash ``g`` is rebuilt from
``seed`` and ``generation`` (in the spec), not stored.

Special ids: padding (``padding_idx``, default 0) maps to exactly zero; the OOV id ``V - 1``
is an ordinary id.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import EmbeddingTable, tensor_bytes
from ctrzip.nn.embedding.hashed import PRIME, check_ids, universal_constants
from ctrzip.nn.swappable import register_swappable


def index_dtype(codebook_size: int) -> torch.dtype:
    """Smallest stored type of a cluster index below ``codebook_size``."""
    if codebook_size <= 256:
        return torch.uint8
    if codebook_size <= 32768:
        return torch.int16
    return torch.int32


def cce_bytes(num_embeddings: int, embedding_dim: int, num_chunks: int, codebook_size: int) -> int:
    """Stored bytes: ``V c s + 2 k D 4`` (indices, then the clustered and hashed tables)."""
    s = torch.empty(0, dtype=index_dtype(codebook_size)).element_size()
    return num_embeddings * num_chunks * s + 2 * codebook_size * embedding_dim * 4


def _hash(ids: Tensor, consts: Tensor, k: int) -> Tensor:
    """``[N] -> [N, c]`` universal hashes ``((a_j i + b_j) mod P) mod k``."""
    return ((ids.long().unsqueeze(1) * consts[:, 0] + consts[:, 1]) % PRIME) % k


@register_swappable
class CCETable(EmbeddingTable):
    """Chunked sum of a clustered table and a hashed table (see the module docstring).

    Args:
        num_embeddings: V (ids incl. padding and OOV).
        embedding_dim: D, divisible by ``num_chunks``.
        num_chunks: c >= 1.
        codebook_size: k >= 1 rows of each chunk's two tables.
        seed: draws the initial index hash and every later ``g``.
        generation: how many times the table was re-clustered (picks the current ``g``).
        padding_idx: id mapped to exactly zero (None: none).
        init_std: std of each table's random rows (a chunk row is the sum of two).

    Raises:
        CompressionError: ``D`` not divisible by ``num_chunks`` or a setting below 1 (named).

    Lookups take int32/int64 ids of any shape and return float32 ``[..., D]``; an id outside
    ``[0, V)`` raises ``IndexError``.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        num_chunks: int = 4,
        codebook_size: int = 256,
        seed: int = 0,
        generation: int = 0,
        padding_idx: int | None = 0,
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        if num_chunks < 1 or codebook_size < 1:
            raise CompressionError(
                f"cce: num_chunks and codebook_size must be >= 1, got {num_chunks} and {codebook_size}"
            )
        if embedding_dim % num_chunks:
            raise CompressionError(
                f"cce: num_chunks {num_chunks} must divide the embedding dim {embedding_dim}"
            )
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.num_chunks, self.codebook_size = num_chunks, codebook_size
        self.seed, self.generation, self.padding_idx = seed, generation, padding_idx
        sub = embedding_dim // num_chunks
        self.clustered = nn.Parameter(torch.randn(num_chunks, codebook_size, sub) * init_std)
        self.hashed = nn.Parameter(torch.randn(num_chunks, codebook_size, sub) * init_std)
        first = torch.tensor(universal_constants(seed, num_chunks), dtype=torch.long)
        assign = _hash(torch.arange(num_embeddings), first, codebook_size).to(index_dtype(codebook_size))
        self.register_buffer("assign", assign)  # [V, c], stored: the learned index
        self.register_buffer("_g", self._g_consts(), persistent=False)  # rebuilt from the spec

    def _g_consts(self) -> Tensor:
        # a family per generation, never the one of the initial index hash
        seed = self.seed * 1_000_003 + self.generation + 1
        return torch.tensor(universal_constants(seed, self.num_chunks), dtype=torch.long)

    @staticmethod
    def bytes_for(num_embeddings: int, embedding_dim: int, num_chunks: int, codebook_size: int) -> int:
        """Stored bytes (``cce_bytes``)."""
        return cce_bytes(num_embeddings, embedding_dim, num_chunks, codebook_size)

    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        check_ids(ids, self.num_embeddings, "cce table")
        flat = ids.reshape(-1).long()
        chunk = torch.arange(self.num_chunks, device=flat.device)
        a = self.assign[flat].long()  # [N, c]
        g = _hash(flat, self._g, self.codebook_size)  # [N, c]
        sub = self.clustered[chunk, a] + self.hashed[chunk, g]  # [N, c, D / c]
        out = sub.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            out = out.masked_fill((flat == self.padding_idx).unsqueeze(-1), 0.0)
        return out.reshape(*ids.shape, self.embedding_dim)

    def materialize(self) -> Tensor:
        with torch.no_grad():
            return self.forward(torch.arange(self.num_embeddings, device=self.clustered.device))

    def chunk_rows(self) -> Tensor:
        """The current chunk vectors of every id, ``[c, V, D / c]`` (what re-clustering clusters)."""
        return self.materialize().reshape(self.num_embeddings, self.num_chunks, -1).transpose(0, 1)

    @torch.no_grad()
    def set_clusters(self, assign: Tensor, centroids: Tensor) -> None:
        """Re-cluster: ``assign [V, c]`` indices below k become the index, ``centroids
        [c, k, D / c]`` the clustered table; the hashed table restarts at zero under a new hash.

        Raises:
            CompressionError: wrong shapes or an index out of range.
        """
        v, c, k = self.num_embeddings, self.num_chunks, self.codebook_size
        if assign.shape != (v, c) or centroids.shape != self.clustered.shape:
            raise CompressionError(
                f"cce: set_clusters needs assign [{v}, {c}] and centroids {list(self.clustered.shape)}, "
                f"got {list(assign.shape)} and {list(centroids.shape)}"
            )
        if assign.numel() and (int(assign.min()) < 0 or int(assign.max()) >= k):
            raise CompressionError(f"cce: cluster indices must lie in [0, {k})")
        self.assign.copy_(assign.to(self.assign.dtype))
        self.clustered.copy_(centroids)
        self.hashed.zero_()
        self.set_generation(self.generation + 1)

    def set_generation(self, generation: int) -> None:
        """Point ``g`` at the hash family of ``generation`` (restoring a saved state)."""
        self.generation = generation
        self._g = self._g_consts().to(self.clustered.device)

    def nbytes(self) -> int:
        return tensor_bytes(self.assign, self.clustered, self.hashed)

    def bytes_at(self, rows: int) -> int:
        """Bytes at ``rows`` ids with the same ``c`` and ``k`` (only the index grows), for
        projecting a result to a larger vocabulary."""
        return self.bytes_for(rows, self.embedding_dim, self.num_chunks, self.codebook_size)

    def spec(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "num_chunks": self.num_chunks,
            "codebook_size": self.codebook_size,
            "seed": self.seed,
            "generation": self.generation,
            "padding_idx": self.padding_idx,
        }

    def extra_repr(self) -> str:
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, chunks={self.num_chunks}, "
            f"k={self.codebook_size}, generation={self.generation}"
        )


__all__ = ["CCETable", "cce_bytes", "index_dtype"]
