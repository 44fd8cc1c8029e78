"""The hashing trick as a method (``hashing``): large tables become ``HashedTable``s of ``B``
shared rows (Weinberger et al., ICML 2009; the embedding-table form used by DLRM and others).

``init: from_table`` starts each bucket at the count-weighted mean of the trained rows hashed
into it (the least-squares start for rows forced to share); ``random`` trains the buckets
from scratch. Then the guarded fine-tune of every table baseline (``common``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor

from ctrzip.compression.api import register_method
from ctrzip.compression.baselines.common import BaselineConfig, TableBaseline
from ctrzip.config import ConfigError
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.hashed import HASHES, HashedTable


@dataclass
class HashingConfig(BaselineConfig):
    """Hashed tables.

    Args:
        num_buckets: B rows per selected table (the size knob; or size by ``ratio`` /
            ``budget_bytes``: ``B = floor(bytes / (4 D))``).
        hash: ``universal`` (``((a i + b) mod P) mod B``) or ``identity`` (``i mod B``).
        hash_seed: draws the universal hash's ``a`` and ``b``.
        (and ``BaselineConfig``: fields, min_vocab, ratio, budget_bytes, init, fine-tune settings)
        version: config schema version.

    Raises:
        ConfigError: ``num_buckets < 1``, an unknown ``hash`` or a bad shared setting.
    """

    num_buckets: int | None = None
    hash: Literal["universal", "identity"] = "universal"
    hash_seed: int = 0
    version: int = 1

    method: ClassVar[str] = "hashing"
    knob: ClassVar[str] = "num_buckets"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_buckets is not None and self.num_buckets < 1:
            raise ConfigError(f"hashing: num_buckets must be >= 1, got {self.num_buckets}")
        if self.hash not in HASHES:
            raise ConfigError(f"hashing: hash must be one of {HASHES}, got {self.hash!r}")


@register_method("hashing", HashingConfig)
class Hashing(TableBaseline[HashingConfig]):
    """Swap selected tables for ``HashedTable``."""

    form = "HashedTable"

    def size(self, name: str, table: EmbeddingTable, target_bytes: int | None) -> dict[str, Any] | None:
        b = self.config.num_buckets if target_bytes is None else target_bytes // (4 * table.embedding_dim)
        return {"num_buckets": int(b)} if b is not None and b >= 1 else None

    def form_bytes(self, table: EmbeddingTable, params: dict[str, Any]) -> int:
        return HashedTable.bytes_for(params["num_buckets"], table.embedding_dim)

    def smallest_bytes(self, table: EmbeddingTable) -> int:
        return HashedTable.bytes_for(1, table.embedding_dim)

    def build(self, name: str, weight: Tensor, params: dict[str, Any], pad: int | None) -> EmbeddingTable:
        cfg, b = self.config, params["num_buckets"]
        if cfg.init == "from_table":
            return HashedTable.from_dense(weight, b, self.counts(name), cfg.hash, cfg.hash_seed, pad)
        v, d = weight.shape
        return HashedTable(v, d, b, cfg.hash, cfg.hash_seed, pad, init_std=self.random_std(weight))
