"""Magnitude pruning as a method (``prune``; Han et al., NeurIPS 2015): the smallest entries
(``granularity: element``, stored CSR) or rows (``row``, kept ids + rows) of each selected table
are dropped, the rest fine-tuned with the pattern fixed (``PrunedTable``).

Sizing: ``sparsity`` (the fraction of non-padding entries/rows dropped) or ``ratio`` /
``budget_bytes`` (the most entries whose sparse storage fits, index bytes included). The CSR
format only pays off at high sparsity (about 80 % at D = 16). Starts from the trained table
only: ``init: random`` is refused (magnitudes rank trained weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor

from ctrzip.compression.api import register_method
from ctrzip.compression.baselines.common import BaselineConfig, TableBaseline
from ctrzip.config import ConfigError
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.pruned import GRANULARITIES, PrunedTable, max_kept, pruned_bytes


@dataclass
class PruneConfig(BaselineConfig):
    """Magnitude-pruned tables.

    Args:
        sparsity: fraction of non-padding entries (or rows) dropped, in [0, 1) (the size knob).
        granularity: ``element`` (CSR) or ``row``.
        (and ``BaselineConfig``: fields, min_vocab, ratio, budget_bytes, fine-tune settings;
        ``init`` must stay ``from_table``)
        version: config schema version.

    Raises:
        ConfigError: ``sparsity`` outside [0, 1), an unknown ``granularity``, ``init: random``
            or a bad shared setting.
    """

    sparsity: float | None = None
    granularity: Literal["element", "row"] = "element"
    version: int = 1

    method: ClassVar[str] = "prune"
    knob: ClassVar[str] = "sparsity"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sparsity is not None and not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"prune: sparsity must be in [0, 1), got {self.sparsity}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"prune: granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.init != "from_table":
            raise ConfigError(
                "prune: init must be 'from_table' (magnitude pruning ranks the trained weights)"
            )


def _real(table: EmbeddingTable, granularity: str) -> int:
    """Entries (or rows) outside the padding row."""
    rows = table.num_embeddings - (getattr(table, "padding_idx", 0) is not None)
    return rows * (table.embedding_dim if granularity == "element" else 1)


@register_method("prune", PruneConfig)
class Prune(TableBaseline[PruneConfig]):
    """Swap selected tables for ``PrunedTable``."""

    form = "PrunedTable"

    def size(self, name: str, table: EmbeddingTable, target_bytes: int | None) -> dict[str, Any] | None:
        g = self.config.granularity
        real = _real(table, g)
        if target_bytes is None:
            kept = math.floor((1.0 - self.config.sparsity) * real + 1e-9)  # type: ignore[operator]
        else:
            kept = min(real, max_kept(table.num_embeddings, table.embedding_dim, g, target_bytes))
        return {"kept": int(kept), "sparsity": 1.0 - kept / real} if kept >= 1 else None

    def form_bytes(self, table: EmbeddingTable, params: dict[str, Any]) -> int:
        return pruned_bytes(
            table.num_embeddings, table.embedding_dim, self.config.granularity, params["kept"]
        )

    def smallest_bytes(self, table: EmbeddingTable) -> int:
        return pruned_bytes(table.num_embeddings, table.embedding_dim, self.config.granularity, 1)

    def build(self, name: str, weight: Tensor, params: dict[str, Any], pad: int | None) -> EmbeddingTable:
        return PrunedTable.from_dense(weight, self.config.granularity, params["kept"], pad)
