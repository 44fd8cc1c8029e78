"""SVD baseline (method ``svd``): the same factorized structures, initialized from the weights.

``W ~ (U_k S_k^1/2)(S_k^1/2 V_k^T)`` for MLP layers (original bias on the second factor) and
``X_f ~ (U S^1/2)(S^1/2 V^T)`` for tables (no mean term), as the feature-mimicking paper's
SVD rows (Yu et al., KDD 2024, Tables 4-5). It needs no statistics, so no data pass; use
the same ``relu_between`` as the feature-mimicking run it is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ctrzip.compression.api import TargetDecision, register_method
from ctrzip.compression.lowrank.factorized import FactorizedMethod, check_rank, fold_checked
from ctrzip.compression.lowrank.feature_mimicking import (
    HINT,
    FactorizedConfig,
    embedding_decisions,
    mlp_decisions,
    mlp_targets,
)
from ctrzip.compression.select import tables
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.loader import resolve_device
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.lowrank import LowRankTable
from ctrzip.nn.lowrank_linear import LowRankLinear
from ctrzip.nn.swappable import replace_module


@dataclass
class SVDConfig(FactorizedConfig):
    """Truncated-SVD initialization (fields as ``FactorizedConfig``).

    Args:
        version: config schema version.
    """

    version: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mlp:
            check_rank("MLP", self.rank, None)
        if self.embedding:
            check_rank("embedding", self.embedding_rank, None)


@register_method("svd", SVDConfig)
class SVD(FactorizedMethod[SVDConfig]):
    """Data-free factorization of MLP weights and embedding tables."""

    def plan(self, step: str, model: CTRModel) -> list[TargetDecision]:
        cfg = self.config
        if step == "mlp":  # the SVD factors carry no first-factor bias
            assert cfg.rank is not None
            return mlp_decisions(self.key, model, cfg.mlp_targets, cfg.rank, down_bias=False)
        return embedding_decisions(self.key, model, cfg)

    def hint(self) -> str:
        return HINT

    def compress_mlp(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        cfg = self.config
        assert cfg.rank is not None
        report = {}
        targets = mlp_targets(model, cfg.mlp_targets)
        for (fqn, linear), d in zip(targets.items(), self.plan("mlp", model), strict=True):
            if not self.decided(d):
                continue
            new = LowRankLinear.from_svd(linear, cfg.rank, cfg.relu_between)
            replace_module(model, fqn, new)
            report[fqn] = {"rank": new.rank, "shape": [linear.in_features, linear.out_features]}
        return report

    def compress_embeddings(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        cfg = self.config
        assert cfg.embedding_rank is not None
        fields = {}
        targets = tables(model, cfg.embedding_fields)
        for (name, old), d in zip(targets.items(), self.plan("embedding", model), strict=True):
            if not self.decided(d):
                continue
            new = LowRankTable.from_svd(
                old.materialize(), cfg.embedding_rank, getattr(old, "padding_idx", None)
            )
            replace_module(model, f"embedding.tables.{name}", new)  # hands over links to the old table
            fields[name] = {"rank": new.rank, "bytes": {"before": old.nbytes(), "after": new.nbytes()}}
        rep: dict[str, Any] = {"fields": fields}
        if cfg.fold and fields:
            rep["fold"] = fold_checked(model, resolve_device(cfg.device))
        return rep
