"""Tensor-Train baseline (method ``tt``, TT-Rec): large tables become trainable TT cores.

Initialized by TT-SVD of the trained table (the "pre-train" rows of the feature-mimicking
paper's Table 4) or randomly; then fine-tuned like the other factorized methods. Rows are
rebuilt per looked-up id, which costs time: benchmarks report the slowdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ctrzip.compression.api import TargetDecision, register_method
from ctrzip.compression.lowrank.factorized import FactorizedMethod, StepOptions
from ctrzip.compression.select import tables
from ctrzip.compression.shrink import (
    decide,
    explicit_names,
    module_bytes,
    not_smaller,
    refuse_listed,
    tt_table_bytes,
)
from ctrzip.config import ConfigError
from ctrzip.data.dataset import EncodedDataset
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.tt import TTTable
from ctrzip.nn.swappable import replace_module


@dataclass
class TTConfig(StepOptions):
    """Tensor-Train tables.

    Args:
        tt_rank: inner TT-rank (TT-Rec: 16).
        fields: field-name globs (None = every sparse field with ``vocab_size >= min_vocab``);
            a field named literally is factorized whatever its size, or refused if that is not smaller.
        min_vocab: with ``fields`` None, only tables at least this large are factorized.
        init: ``tt_svd`` (from the trained table) or ``random`` (std of the old rows).
        version: config schema version.
    """

    tt_rank: int = 16
    fields: tuple[str, ...] | None = None
    min_vocab: int = 1000
    init: Literal["tt_svd", "random"] = "tt_svd"
    version: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tt_rank < 1:
            raise ConfigError(f"tt_rank must be >= 1, got {self.tt_rank}")
        if self.min_vocab < 0:
            raise ConfigError("min_vocab must be >= 0")
        if self.init not in ("tt_svd", "random"):
            raise ConfigError("init must be 'tt_svd' or 'random'")


@register_method("tt", TTConfig)
class TT(FactorizedMethod[TTConfig]):
    """Swap large tables for ``TTTable``; MLP untouched, nothing to fold."""

    def steps(self) -> list[str]:
        return ["embedding"]

    def plan(self, step: str, model: CTRModel) -> list[TargetDecision]:
        cfg = self.config
        listed = explicit_names(cfg.fields)
        out = []
        for name, old in tables(model, cfg.fields).items():
            v, d = old.num_embeddings, old.embedding_dim
            before = module_bytes(old)
            after = tt_table_bytes(v, d, cfg.tt_rank, next((p.element_size() for p in old.parameters()), 4))
            if cfg.fields is None and v < cfg.min_vocab:
                reason: str | None = f"vocab {v:,} < min_vocab {cfg.min_vocab:,}"
            else:
                reason = not_smaller(f"TTTable tt_rank {cfg.tt_rank}", before, after)
            if reason is not None and name in listed:
                raise refuse_listed(self.key, "fields", name, reason)
            out.append(decide(f"embedding.tables.{name}", "table", before, after, reason))
        return out

    def hint(self) -> str:
        return "lower tt_rank or min_vocab, or list larger fields"

    def compress_embeddings(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        cfg = self.config
        fields = {}
        targets = tables(model, cfg.fields)
        for (name, old), d in zip(targets.items(), self.plan("embedding", model), strict=True):
            if not self.decided(d):
                continue
            weight = old.materialize()
            pad = getattr(old, "padding_idx", None)
            if cfg.init == "tt_svd":
                new = TTTable.from_dense(weight, cfg.tt_rank, padding_idx=pad)
            else:
                std = float(weight.std()) if weight.numel() > 1 else 1e-4
                new = TTTable(
                    old.num_embeddings, old.embedding_dim, cfg.tt_rank, padding_idx=pad, init_std=std
                )
                new = new.to(device=weight.device, dtype=weight.dtype)
            err = float((new.materialize() - weight).norm() / weight.norm().clamp_min(1e-30))
            replace_module(model, f"embedding.tables.{name}", new)  # hands over links to the old table
            fields[name] = {
                "ranks": new.ranks,
                "relative_error": err,
                "bytes": {"before": old.nbytes(), "after": new.nbytes()},
            }
        return {"fields": fields}
