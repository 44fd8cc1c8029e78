"""Deep hash embedding as a method (``dhe``; Kang et al., KDD 2021): large tables become
``DHETable``s, a hash encoding decoded by an MLP, with no table at all.

Sizing by ``ratio`` / ``budget_bytes`` picks the widest hidden layers whose bytes fit (``hidden``
sets it directly). ``init: from_table`` distills the trained rows into the MLP
(``DHETable.distill``: count-weighted squared error, ``distill_steps`` Adam steps); ``random``
trains from scratch (the paper's protocol), with the output layer scaled so the rows start at
the trained rows' std.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ctrzip.compression.api import register_method
from ctrzip.compression.baselines.common import BaselineConfig, TableBaseline
from ctrzip.config import ConfigError
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.dhe import DHETable, dhe_bytes


@dataclass
class DHEConfig(BaselineConfig):
    """Deep hash embeddings.

    Args:
        hidden: width h of every hidden layer (the size knob).
        num_hashes: k hash functions, the encoding width (the paper: 1024).
        num_layers: L hidden layers (>= 1).
        buckets: m, range of each hash (the paper: 1e6).
        hash_seed: draws the hash constants.
        distill_steps: Adam steps of the ``from_table`` fit (>= 1).
        distill_lr: its learning rate.
        distill_batch_size: ids per step.
        (and ``BaselineConfig``: fields, min_vocab, ratio, budget_bytes, init, fine-tune settings)
        version: config schema version.

    Raises:
        ConfigError: a setting below its minimum (named) or a bad shared setting.
    """

    hidden: int | None = None
    num_hashes: int = 32
    num_layers: int = 2
    buckets: int = 1_000_000
    hash_seed: int = 0
    distill_steps: int = 200
    distill_lr: float = 1e-2
    distill_batch_size: int = 4096
    version: int = 1

    method: ClassVar[str] = "dhe"
    knob: ClassVar[str] = "hidden"

    def __post_init__(self) -> None:
        super().__post_init__()
        lows = {"hidden": 1, "num_hashes": 1, "num_layers": 1, "buckets": 2, "distill_steps": 1,
                "distill_batch_size": 1}  # fmt: skip
        for name, low in lows.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ConfigError(f"dhe: {name} must be >= {low}, got {value}")
        if not self.distill_lr > 0:
            raise ConfigError(f"dhe: distill_lr must be > 0, got {self.distill_lr}")


@register_method("dhe", DHEConfig)
class DHE(TableBaseline[DHEConfig]):
    """Swap selected tables for ``DHETable``."""

    form = "DHETable"

    def _bytes(self, h: int, d: int) -> int:
        cfg = self.config
        return dhe_bytes(cfg.num_hashes, h, cfg.num_layers, d)

    def size(self, name: str, table: EmbeddingTable, target_bytes: int | None) -> dict[str, Any] | None:
        if target_bytes is None:
            return {"hidden": self.config.hidden}
        d = table.embedding_dim
        if self._bytes(1, d) > target_bytes:
            return None
        lo, hi = 1, 2
        while self._bytes(hi, d) <= target_bytes:  # bytes grow with h: double, then bisect
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self._bytes(mid, d) <= target_bytes else (lo, mid)
        return {"hidden": lo}

    def form_bytes(self, table: EmbeddingTable, params: dict[str, Any]) -> int:
        return self._bytes(params["hidden"], table.embedding_dim)

    def smallest_bytes(self, table: EmbeddingTable) -> int:
        return self._bytes(1, table.embedding_dim)

    def build(self, name: str, weight: Tensor, params: dict[str, Any], pad: int | None) -> EmbeddingTable:
        cfg = self.config
        v, d = weight.shape
        table = DHETable(
            v, d, cfg.num_hashes, params["hidden"], cfg.num_layers, cfg.buckets, cfg.hash_seed, pad
        )
        table = table.to(weight.device)
        if cfg.init == "from_table":
            table.distill(weight, self.counts(name), cfg.distill_steps, cfg.distill_batch_size,
                          cfg.distill_lr, cfg.seed)  # fmt: skip
            return table
        with torch.no_grad():  # start the rows at the trained rows' scale
            scale = self.random_std(weight) / max(float(table.materialize()[1:].std()), 1e-12)
            table.weights[-1].mul_(scale)
            table.biases[-1].mul_(scale)
        return table
