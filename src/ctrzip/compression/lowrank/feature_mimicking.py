"""Low-rank compression by feature mimicking (method ``lowrank``; Yu et al., KDD 2024).

MLP step: a hidden Linear ``y = W x + b`` becomes ``LowRankLinear`` built from the top-k
eigenvectors of its output covariance (eqs. 1-5). Embedding step: each sparse field's
table becomes a ``LowRankTable`` from the frequency-weighted covariance of its vectors
(eqs. 6-12), computed exactly from training counts or by a data pass, then folded into the
model's embedding consumer when it declares one. Each step is followed by evaluation and
one epoch of fine-tuning (``_factorized``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ctrzip.compression.api import register_method
from ctrzip.compression.calibrate import IdMaskedMoments, calibrate
from ctrzip.compression.lowrank.factorized import FactorizedMethod, StepOptions, check_rank, fold_checked
from ctrzip.compression.select import linears_by_glob, mlp_linears, tables
from ctrzip.compression.stats import PCAResult, RunningMoments, choose_rank, pca, table_moments
from ctrzip.config import ConfigError
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.loader import resolve_device
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.lowrank import LowRankTable
from ctrzip.nn.lowrank_linear import LowRankLinear
from ctrzip.nn.swappable import replace_module


@dataclass
class FactorizedConfig(StepOptions):
    """What the factorized methods compress (shared by ``lowrank`` and ``svd``).

    Args:
        mlp: compress MLP hidden layers.
        rank: k for every MLP target (paper: 64 for 400-wide towers).
        mlp_targets: fqn globs of Linears to compress (None = hidden Linears of every MLP
            except each tower's first; never an output head).
        relu_between: ReLU between the two factors (default off: without it the layer is the
            exact PCA reconstruction; see LOWRANK.md).
        embedding: compress the sparse fields' tables (after the MLP step).
        embedding_rank: k per field (paper: 16 -> 2 on Criteo).
        embedding_fields: field-name globs (None = every sparse field).
        fold: fold projections into the model's embedding consumer when it declares one.
    """

    mlp: bool = True
    rank: int | None = 64
    mlp_targets: tuple[str, ...] | None = None
    relu_between: bool = False
    embedding: bool = False
    embedding_rank: int | None = 4
    embedding_fields: tuple[str, ...] | None = None
    fold: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.mlp or self.embedding):
            raise ConfigError("nothing to compress: set mlp and/or embedding")


@dataclass
class LowRankConfig(FactorizedConfig):
    """Feature-mimicking configuration (see ``FactorizedConfig`` for the shared fields).

    Args:
        variance: instead of ``rank``, the smallest k keeping this fraction of variance.
        bias_form: ``centered`` (``U^T b`` on the first factor) or ``paper`` (eq. 5).
        embedding_variance: instead of ``embedding_rank``, a variance fraction per field.
        embedding_form: ``centered`` (store ``(x - mu) U``) or ``paper`` (store ``x U``).
        embedding_stats: ``counts`` (exact, from the dataset's training counts, no data
            pass) or ``data`` (a pass over the training split).
        calib_max_batches: cap on calibration batches (None = the whole training split).
        version: config schema version.
    """

    variance: float | None = None
    bias_form: Literal["centered", "paper"] = "centered"
    embedding_variance: float | None = None
    embedding_form: Literal["centered", "paper"] = "centered"
    embedding_stats: Literal["counts", "data"] = "counts"
    calib_max_batches: int | None = None
    version: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mlp:
            check_rank("MLP", self.rank, self.variance)
        if self.embedding:
            check_rank("embedding", self.embedding_rank, self.embedding_variance)
        if self.bias_form not in ("centered", "paper") or self.embedding_form not in ("centered", "paper"):
            raise ConfigError("bias_form / embedding_form must be 'centered' or 'paper'")
        if self.embedding_stats not in ("counts", "data"):
            raise ConfigError("embedding_stats must be 'counts' or 'data'")
        if self.calib_max_batches is not None and self.calib_max_batches < 1:
            raise ConfigError("calib_max_batches must be >= 1 or null")


def mlp_targets(model: CTRModel, patterns: tuple[str, ...] | None) -> dict[str, Any]:
    """Default rule or fqn globs (shared with the SVD baseline)."""
    return dict(mlp_linears(model)) if patterns is None else dict(linears_by_glob(model, patterns))


def _require_train(data: EncodedDataset | None, what: str) -> EncodedDataset:
    if data is None or "train" not in data.splits:
        raise CompressionError(f"lowrank needs the training split for {what}; pass an EncodedDataset")
    return data


def _padding_idx(table: Any) -> int | None:
    return getattr(table, "padding_idx", None)


@register_method("lowrank", LowRankConfig)
class LowRank(FactorizedMethod[LowRankConfig]):
    """Feature mimicking: statistics of outputs -> PCA -> factorized modules."""

    def compress_mlp(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        cfg = self.config
        targets = mlp_targets(model, cfg.mlp_targets)
        if not targets:
            return {}
        data = _require_train(data, "MLP calibration")
        device = resolve_device(cfg.device)
        observers = {fqn: RunningMoments() for fqn in targets}
        calibrate(
            model,
            observers,
            self.loader(data, "train", device),
            max_batches=cfg.calib_max_batches,
            progress=cfg.progress,
        )
        report = {}
        for fqn, linear in targets.items():
            res = pca(observers[fqn])
            k = choose_rank(res, cfg.rank, cfg.variance)
            new = LowRankLinear.from_pca(linear, res.mean, res.basis[:, :k], cfg.relu_between, cfg.bias_form)
            replace_module(model, fqn, new)
            report[fqn] = {**res.energy_report(k), "shape": [linear.in_features, linear.out_features]}
        return report

    def field_stats(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, PCAResult]:
        """Per-field PCA of the embedding vectors, from counts or from a data pass."""
        cfg = self.config
        targets = tables(model, cfg.embedding_fields)
        schema = model.schema
        if cfg.embedding_stats == "counts":
            if data is None:
                raise CompressionError("embedding_stats='counts' needs an EncodedDataset with counts")
            out = {}
            for name, table in targets.items():
                if name not in data.counts:
                    raise CompressionError(
                        f"no training counts for field {name!r}; set embedding_stats='data'"
                    )
                ignore = (0,) if schema[name].kind == "sequence" else ()
                out[name] = pca(table_moments(table.materialize(), data.counts[name], ignore))
            return out
        data = _require_train(data, "embedding calibration")
        device = resolve_device(cfg.device)
        observers = {
            f"embedding.tables.{name}": IdMaskedMoments(0 if schema[name].kind == "sequence" else None)
            for name in targets
        }
        calibrate(
            model,
            observers,
            self.loader(data, "train", device),
            max_batches=cfg.calib_max_batches,
            progress=cfg.progress,
        )
        return {name: pca(observers[f"embedding.tables.{name}"]) for name in targets}  # type: ignore[arg-type]

    def compress_embeddings(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        cfg = self.config
        stats = self.field_stats(model, data)
        fields = {}
        for name, res in stats.items():
            old = model.embedding.tables[name]
            k = choose_rank(res, cfg.embedding_rank, cfg.embedding_variance)
            new = LowRankTable.from_pca(
                old.materialize(), res.mean, res.basis[:, :k], _padding_idx(old), cfg.embedding_form
            )
            model.embedding.tables[name] = new
            fields[name] = {**res.energy_report(k), "bytes": {"before": old.nbytes(), "after": new.nbytes()}}
        rep: dict[str, Any] = {"fields": fields}
        if cfg.fold:
            rep["fold"] = fold_checked(model, resolve_device(cfg.device))
        return rep
