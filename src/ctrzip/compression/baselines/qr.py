"""DLRM's quotient-remainder trick as a method (``qr``): large tables become ``QRTable``s
(Shi et al., KDD 2020), ``x_i = W_q[i // c] * W_r[i mod c]`` (or ``+``).

Sizing by ``ratio`` / ``budget_bytes`` picks the fewest collisions ``c`` (the most rows, as DLRM's
``qr_collisions``) whose ``(ceil(V / c) + c) * D * 4`` bytes fit; the smallest form is at
``c ~ sqrt(V)``. ``init: from_table`` starts the quotient rows at the count-weighted means of
their ids' trained rows (``QRTable.from_dense``); ``random`` trains from scratch.
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
from ctrzip.nn.embedding.qr import COMBINES, QRTable


@dataclass
class QRConfig(BaselineConfig):
    """Quotient-remainder tables.

    Args:
        collisions: c, the remainder table's rows, for every selected table (the size knob).
        combine: ``mult`` (element-wise product, the paper's choice) or ``add``.
        (and ``BaselineConfig``: fields, min_vocab, ratio, budget_bytes, init, fine-tune settings)
        version: config schema version.

    Raises:
        ConfigError: ``collisions < 1``, an unknown ``combine`` or a bad shared setting.
    """

    collisions: int | None = None
    combine: Literal["mult", "add"] = "mult"
    version: int = 1

    method: ClassVar[str] = "qr"
    knob: ClassVar[str] = "collisions"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.collisions is not None and self.collisions < 1:
            raise ConfigError(f"qr: collisions must be >= 1, got {self.collisions}")
        if self.combine not in COMBINES:
            raise ConfigError(f"qr: combine must be one of {COMBINES}, got {self.combine!r}")


def _best_c(v: int) -> int:
    """The collisions that minimize ``ceil(V / c) + c``."""
    r = math.isqrt(v)
    return min(range(max(1, r - 1), r + 3), key=lambda c: -(-v // c) + c)


@register_method("qr", QRConfig)
class QR(TableBaseline[QRConfig]):
    """Swap selected tables for ``QRTable``."""

    form = "QRTable"

    def size(self, name: str, table: EmbeddingTable, target_bytes: int | None) -> dict[str, Any] | None:
        if target_bytes is None:
            return {"collisions": self.config.collisions}
        v, d = table.num_embeddings, table.embedding_dim
        for c in range(1, _best_c(v) + 1):  # fewest collisions first: bytes fall until sqrt(V)
            if QRTable.bytes_for(v, d, c) <= target_bytes:
                return {"collisions": c}
        return None

    def form_bytes(self, table: EmbeddingTable, params: dict[str, Any]) -> int:
        return QRTable.bytes_for(table.num_embeddings, table.embedding_dim, params["collisions"])

    def smallest_bytes(self, table: EmbeddingTable) -> int:
        v = table.num_embeddings
        return QRTable.bytes_for(v, table.embedding_dim, _best_c(v))

    def build(self, name: str, weight: Tensor, params: dict[str, Any], pad: int | None) -> EmbeddingTable:
        cfg, c = self.config, params["collisions"]
        if cfg.init == "from_table":
            return QRTable.from_dense(weight, c, self.counts(name), cfg.combine, pad)
        v, d = weight.shape
        return QRTable(v, d, c, cfg.combine, pad, init_std=self.random_std(weight))
