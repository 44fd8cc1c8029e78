"""DLRM's mixed-dimension embeddings as a method (``mixed_dim``; Ginart et al., ISIT 2021).

Each selected table's ids are split into ``num_blocks`` geometrically growing id ranges
(ids are sorted by descending frequency, so the head block is the most popular); block ``k``
gets dimension ``d_k = floor(lambda * p_k ** alpha)`` in ``[1, D]`` with ``p_k`` its mean
training count per id (the paper's power-law rule), and a projection to ``D``. ``lambda`` is the
largest that fits the byte target (``ratio`` / ``budget_bytes``) or is set by ``base_dim``, the
head block's dimension (DLRM's ``md_base_dim``). Needs the dataset's training counts.

``init: from_table`` fits each block by truncated SVD of its trained rows; ``random`` trains
from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from ctrzip.compression.api import register_method
from ctrzip.compression.baselines.common import BaselineConfig, TableBaseline
from ctrzip.config import ConfigError
from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.mixed_dim import (
    MixedDimTable,
    block_bytes,
    block_popularity,
    geometric_edges,
    power_law_dims,
)


@dataclass
class MixedDimConfig(BaselineConfig):
    """Mixed-dimension tables by the power-law rule.

    Args:
        alpha: temperature of ``d_k ~ p_k ** alpha``, in [0, 1] (0: one dimension for all).
        num_blocks: popularity blocks per table (>= 1; fewer when the vocabulary is small).
        base_dim: the head block's dimension d_0 (the size knob), in [1, D].
        (and ``BaselineConfig``: fields, min_vocab, ratio, budget_bytes, init, fine-tune settings)
        version: config schema version.

    Raises:
        ConfigError: ``alpha`` outside [0, 1], ``num_blocks < 1``, ``base_dim < 1`` or a bad
            shared setting.
    """

    alpha: float = 0.3
    num_blocks: int = 4
    base_dim: int | None = None
    version: int = 1

    method: ClassVar[str] = "mixed_dim"
    knob: ClassVar[str] = "base_dim"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"mixed_dim: alpha must be in [0, 1], got {self.alpha}")
        if self.num_blocks < 1:
            raise ConfigError(f"mixed_dim: num_blocks must be >= 1, got {self.num_blocks}")
        if self.base_dim is not None and self.base_dim < 1:
            raise ConfigError(f"mixed_dim: base_dim must be >= 1, got {self.base_dim}")


@register_method("mixed_dim", MixedDimConfig)
class MixedDim(TableBaseline[MixedDimConfig]):
    """Swap selected tables for ``MixedDimTable``."""

    form = "MixedDimTable"

    def size(self, name: str, table: EmbeddingTable, target_bytes: int | None) -> dict[str, Any] | None:
        cfg = self.config
        v, d = table.num_embeddings, table.embedding_dim
        counts = self.counts(name)
        if counts is None:
            raise CompressionError(
                f"mixed_dim: field {name!r}: the power-law dimension rule needs training counts; "
                "pass a dataset with counts.npz"
            )
        if cfg.base_dim is not None and cfg.base_dim > d:
            raise CompressionError(
                f"mixed_dim: base_dim {cfg.base_dim} exceeds the embedding dim {d} of field {name!r}"
            )
        edges = geometric_edges(v, cfg.num_blocks)
        pop = block_popularity(counts, edges, getattr(table, "padding_idx", 0))
        dims = power_law_dims(pop, edges, d, cfg.alpha, target_bytes=target_bytes, base_dim=cfg.base_dim)
        return None if dims is None else {"edges": edges, "dims": dims}

    def form_bytes(self, table: EmbeddingTable, params: dict[str, Any]) -> int:
        return block_bytes(params["edges"], params["dims"], table.embedding_dim)

    def smallest_bytes(self, table: EmbeddingTable) -> int:
        edges = geometric_edges(table.num_embeddings, self.config.num_blocks)
        return block_bytes(edges, [1] * (len(edges) - 1), table.embedding_dim)

    def build(self, name: str, weight: Tensor, params: dict[str, Any], pad: int | None) -> EmbeddingTable:
        edges, dims = params["edges"], params["dims"]
        if self.config.init == "from_table":
            return MixedDimTable.from_dense(weight, edges, dims, pad)
        v, d = weight.shape
        return MixedDimTable(v, d, edges, dims, pad, init_std=self.random_std(weight))
