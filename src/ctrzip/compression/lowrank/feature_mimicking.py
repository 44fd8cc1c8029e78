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

from ctrzip.compression.api import TargetDecision, register_method
from ctrzip.compression.calibrate import IdMaskedMoments
from ctrzip.compression.finetune import split_or_error
from ctrzip.compression.lowrank.factorized import (
    FactorizedMethod,
    StepOptions,
    check_rank,
    fold_checked,
    fold_width,
    linear_decision,
    table_decision,
)
from ctrzip.compression.select import linears_by_glob, mlp_linears, tables
from ctrzip.compression.sharded import sharded_calibrate
from ctrzip.compression.shrink import explicit_names, refuse_listed
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
        if self.calib_max_batches is not None and not (self.mlp or self.embedding_stats == "data"):
            raise ConfigError(
                "calib_max_batches caps a calibration pass, and none runs here (mlp: false, "
                "embedding_stats: counts): remove it or set embedding_stats: data"
            )


def mlp_targets(model: CTRModel, patterns: tuple[str, ...] | None) -> dict[str, Any]:
    """Default rule or fqn globs (shared with the SVD baseline)."""
    return dict(mlp_linears(model)) if patterns is None else dict(linears_by_glob(model, patterns))


def _require_train(data: EncodedDataset | None, what: str) -> EncodedDataset:
    if data is None:
        raise CompressionError(f"lowrank needs the training split for {what}; pass an EncodedDataset")
    split_or_error(data, "train", f"lowrank needs it for {what}")
    return data


def _padding_idx(table: Any) -> int | None:
    return getattr(table, "padding_idx", None)


def checked(method: str, setting: str, listed: set[str], name: str, d: TargetDecision) -> TargetDecision:
    """``d``, or ``CompressionError`` when ``name`` was listed literally in ``setting`` and is kept."""
    if d["action"] == "kept" and name in listed:
        raise refuse_listed(method, setting, name, d["reason"])
    return d


def mlp_decisions(
    method: str, model: CTRModel, patterns: tuple[str, ...] | None, rank: int, down_bias: bool
) -> list[TargetDecision]:
    """Decisions for every MLP target at a fixed ``rank`` (shared by ``lowrank`` and ``svd``)."""
    listed = explicit_names(patterns)
    return [
        checked(method, "mlp_targets", listed, fqn, linear_decision(fqn, lin, rank, down_bias))
        for fqn, lin in mlp_targets(model, patterns).items()
    ]


def embedding_decision(
    method: str, model: CTRModel, cfg: FactorizedConfig, name: str, rank: int
) -> TargetDecision:
    """Keep or factorize field ``name`` at ``rank``, counting the fold's consumer columns when
    ``cfg.fold`` applies to it (shared by ``lowrank`` and ``svd``)."""
    table = model.embedding.tables[name]
    fold_out = fold_width(model) if cfg.fold else None
    foldable = model.schema[name].kind == "categorical" or _padding_idx(table) == 0
    d = table_decision(name, table, rank, "embedding_rank", fold_out, foldable)
    return checked(method, "embedding_fields", explicit_names(cfg.embedding_fields), name, d)


def embedding_decisions(method: str, model: CTRModel, cfg: FactorizedConfig) -> list[TargetDecision]:
    """Decisions for every targeted field at the fixed ``cfg.embedding_rank``."""
    assert cfg.embedding_rank is not None
    return [
        embedding_decision(method, model, cfg, name, cfg.embedding_rank)
        for name in tables(model, cfg.embedding_fields)
    ]


HINT = "set rank below the MLP layers' widths and embedding_rank below the embedding dim"


@register_method("lowrank", LowRankConfig)
class LowRank(FactorizedMethod[LowRankConfig]):
    """Feature mimicking: statistics of outputs -> PCA -> factorized modules."""

    def plan(self, step: str, model: CTRModel) -> list[TargetDecision] | None:
        cfg = self.config
        down_bias = cfg.bias_form == "centered"
        if step == "mlp":
            return (
                None
                if cfg.rank is None
                else mlp_decisions(self.key, model, cfg.mlp_targets, cfg.rank, down_bias)
            )
        return None if cfg.embedding_rank is None else embedding_decisions(self.key, model, cfg)

    def hint(self) -> str:
        return HINT

    def compress_mlp(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        cfg = self.config
        targets = mlp_targets(model, cfg.mlp_targets)
        plan = self.plan("mlp", model)
        if plan is not None:  # fixed rank: calibrate only the layers that will shrink
            targets = {
                fqn: lin for (fqn, lin), d in zip(targets.items(), plan, strict=True) if self.decided(d)
            }
        if not targets:
            return {}
        data = _require_train(data, "MLP calibration")
        device = resolve_device(cfg.device)
        observers = {fqn: RunningMoments() for fqn in targets}
        sharded_calibrate(  # each rank its share of the batches; float64 sums all-reduced
            model,
            observers,
            data["train"],
            batch_size=cfg.batch_size,
            device=device,
            max_batches=cfg.calib_max_batches,
            progress=cfg.progress,
        )
        report = {}
        listed = explicit_names(cfg.mlp_targets)
        down_bias = cfg.bias_form == "centered"
        steps = []
        for fqn, linear in targets.items():  # every decision (and refusal) before any swap
            res = pca(observers[fqn])
            k = choose_rank(res, cfg.rank, cfg.variance)
            d = None
            if plan is None:  # rank from the variance: decide now
                d = checked(self.key, "mlp_targets", listed, fqn, linear_decision(fqn, linear, k, down_bias))
            steps.append((fqn, linear, res, k, d))
        for fqn, linear, res, k, d in steps:
            if d is not None and not self.decided(d):
                continue
            new = LowRankLinear.from_pca(linear, res.mean, res.basis[:, :k], cfg.relu_between, cfg.bias_form)
            replace_module(model, fqn, new)
            report[fqn] = {**res.energy_report(k), "shape": [linear.in_features, linear.out_features]}
        return report

    def field_stats(
        self, model: CTRModel, data: EncodedDataset | None, names: list[str] | None = None
    ) -> dict[str, PCAResult]:
        """Per-field PCA of the embedding vectors, from counts or from a data pass.

        ``names``: fields to compute (None = every targeted field).
        """
        cfg = self.config
        targets = tables(model, cfg.embedding_fields)
        if names is not None:
            targets = {n: targets[n] for n in names}
        schema = model.schema
        if cfg.embedding_stats == "counts":
            if data is None:
                raise CompressionError("embedding_stats='counts' needs an EncodedDataset with counts")
            path = data.root / "counts.npz"
            fix = (
                "re-encode the dataset with `ctrzip data encode` (it writes counts.npz from the "
                "train split), or set embedding_stats: data (a pass over the train split)"
            )
            missing = [n for n in targets if n not in data.counts]
            if missing:
                what = "is missing" if not path.exists() else f"has no counts for fields {missing}"
                raise CompressionError(f"{path} {what}: embedding_stats: counts needs them; {fix}")
            out = {}
            for name, table in targets.items():
                if len(data.counts[name]) != table.num_embeddings:
                    raise CompressionError(
                        f"{path}: field {name!r} has {len(data.counts[name])} counts but the model's "
                        f"table has {table.num_embeddings} rows; {fix}"
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
        sharded_calibrate(
            model,
            observers,
            data["train"],
            batch_size=cfg.batch_size,
            device=device,
            max_batches=cfg.calib_max_batches,
            progress=cfg.progress,
        )
        return {name: pca(observers[f"embedding.tables.{name}"]) for name in targets}  # type: ignore[arg-type]

    def compress_embeddings(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        cfg = self.config
        plan = self.plan("embedding", model)
        names = None
        if plan is not None:  # fixed rank: statistics only of the fields that will shrink
            names = [
                name
                for name, d in zip(tables(model, cfg.embedding_fields), plan, strict=True)
                if self.decided(d)
            ]
            if not names:
                return {"fields": {}}
        stats = self.field_stats(model, data, names)
        fields = {}
        ranks = {
            name: choose_rank(res, cfg.embedding_rank, cfg.embedding_variance) for name, res in stats.items()
        }
        if plan is None:  # ranks from the variance: every decision (and refusal) before any swap
            decisions = {name: embedding_decision(self.key, model, cfg, name, k) for name, k in ranks.items()}
            ranks = {name: k for name, k in ranks.items() if self.decided(decisions[name])}
        for name, k in ranks.items():
            res, old = stats[name], model.embedding.tables[name]
            new = LowRankTable.from_pca(
                old.materialize(), res.mean, res.basis[:, :k], _padding_idx(old), cfg.embedding_form
            )
            replace_module(model, f"embedding.tables.{name}", new)  # hands over links to the old table
            fields[name] = {**res.energy_report(k), "bytes": {"before": old.nbytes(), "after": new.nbytes()}}
        rep: dict[str, Any] = {"fields": fields}
        if cfg.fold and fields:
            rep["fold"] = fold_checked(model, resolve_device(cfg.device))
        return rep
