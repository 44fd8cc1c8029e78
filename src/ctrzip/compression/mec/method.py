"""MEC (Yu et al., DASFAA 2025): product-quantized embeddings with popularity-weighted
regularization and contrastive code learning, and its ablation variants.

``compress(model, MECConfig(...), data)`` learns codes per large field (stage 1,
``mec_stage1``), swaps ``PQTable``s into ``model.embedding`` and the first-order tables,
reports the plug-in AUC, then runs the ``finetune`` or ``retrain`` protocol (``mec_stage2``).
``PQConfig`` (key ``pq``) is the same method preset to basic PQ. The ablations of the
paper's Tables 4 and 6 are presets: ``MECConfig.variant("no_reg")`` etc.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ctrzip.compression.api import CompressionMethod, register_method
from ctrzip.compression.mec.diagnostics import as_tensor_counts, code_diagnostics, summarize
from ctrzip.compression.mec.losses import popularity_weights
from ctrzip.compression.mec.stage1 import CodeLearningConfig, CodeLearningResult, fit_codes
from ctrzip.compression.mec.stage2 import (
    StageTwoConfig,
    finetune,
    first_order_embeddings,
    first_order_table,
    model_bytes,
    retrain,
)
from ctrzip.compression.sizes import size_report
from ctrzip.config import ConfigError
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.loader import resolve_device
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.base import DenseTable, EmbeddingTable
from ctrzip.nn.embedding.pq import Layout, PQFit, PQTable, pq_table_bytes
from ctrzip.registry import UnknownNameError

# Ablation presets (spec/MEC.md "Variants"): overrides of CodeLearningConfig.
VARIANTS: dict[str, dict[str, Any]] = {
    "mec": {},
    "no_reg": {"alpha": 0.0},
    "no_cons": {"beta": 0.0},
    "basic_pq": {"weighting": "none", "alpha": 0.0, "beta": 0.0},
    "freq_pq": {"weighting": "count", "alpha": 0.0, "beta": 0.0},
    "weighted_kmeans": {"encoder": "identity", "steps": 0},
    "kmeans": {"encoder": "identity", "steps": 0, "weighting": "none"},
    "rq": {"quantizer": "rq"},
    "aq": {"quantizer": "aq"},
}


@dataclass
class MECConfig:
    """MEC compression of a trained model's large embedding tables.

    Args:
        num_subspaces: M.
        codebook_size: K (codes stored as uint8 for K <= 256, else int16/int32).
        min_vocab: quantize fields with at least this many rows whose dense table is larger
            than the PQ table (ignored when ``fields`` is given).
        fields: explicit field names to quantize (None = the selection rule).
        code_learning: stage-1 knobs (quantizer, encoder, weights, alpha, beta, steps, ...).
        first_order: ``codes`` (first-order weights of quantized fields as a dim-1 PQ table
            on the same codes) or ``dense`` (keep the V x 1 table).
        protocol: ``finetune`` (default), ``retrain`` or ``none`` (plug-in only).
        finetune: training of the ``finetune`` protocol (low lr, ~1 epoch).
        retrain: training of the ``retrain`` protocol (from scratch).
        plugin_per_field: also report each field's plug-in AUC alone (one validation pass each).
        eval_batch_size: validation batch size.
        head_frac: head band of the diagnostics (top fraction of ids by count).
        tail_frac: tail band (bottom fraction of ids by count).
        seed: seeds stage 1 and stage 2.
        device: ``auto``, ``cpu``, ``cuda``.
        version: config schema version.
    """

    num_subspaces: int = 4
    codebook_size: int = 256
    min_vocab: int = 10_000
    fields: tuple[str, ...] | None = None
    code_learning: CodeLearningConfig = field(default_factory=CodeLearningConfig)
    first_order: Literal["codes", "dense"] = "codes"
    protocol: Literal["finetune", "retrain", "none"] = "finetune"
    finetune: StageTwoConfig = field(default_factory=lambda: StageTwoConfig(epochs=1, lr=1e-4))
    retrain: StageTwoConfig = field(
        default_factory=lambda: StageTwoConfig(epochs=2, lr=1e-3, early_stop_patience=2)
    )
    plugin_per_field: bool = True
    eval_batch_size: int = 8192
    head_frac: float = 0.01
    tail_frac: float = 0.8
    seed: int = 0
    device: str = "auto"
    version: int = 1

    def __post_init__(self) -> None:
        if self.num_subspaces < 1:
            raise ConfigError("num_subspaces must be >= 1")
        if self.codebook_size < 2:
            raise ConfigError("codebook_size must be >= 2")
        if self.min_vocab < 3:
            raise ConfigError("min_vocab must be >= 3 (padding + OOV + one real id)")
        if self.first_order not in ("codes", "dense"):
            raise ConfigError("first_order must be codes or dense")
        if self.protocol not in ("finetune", "retrain", "none"):
            raise ConfigError("protocol must be finetune, retrain or none")
        if not 0 < self.head_frac < 1 or not 0 <= self.tail_frac < 1 or self.head_frac + self.tail_frac > 1:
            raise ConfigError("need 0 < head_frac < 1, 0 <= tail_frac < 1, head_frac + tail_frac <= 1")
        if self.eval_batch_size < 1:
            raise ConfigError("eval_batch_size must be >= 1")
        if self.version != 1:
            raise ConfigError(f"unsupported MECConfig version {self.version}")

    @classmethod
    def variant(cls, name: str, **overrides: Any) -> MECConfig:
        """A preset ablation (``VARIANTS``); ``overrides`` set top-level fields.

        Code-learning fields may be overridden too (``steps=200``) on top of the preset.
        """
        if name not in VARIANTS:
            raise UnknownNameError(f"unknown MEC variant {name!r} (known: {', '.join(VARIANTS)})")
        cl_names = {f.name for f in dataclasses.fields(CodeLearningConfig)}
        cl = {**VARIANTS[name], **{k: v for k, v in overrides.items() if k in cl_names}}
        top = {k: v for k, v in overrides.items() if k not in cl_names}
        return cls(code_learning=CodeLearningConfig(**cl), **top)


@dataclass
class PQConfig(MECConfig):
    """Basic product quantization (the ``pq`` method): MEC without popularity weights,
    PWR or contrastive terms (k-means init + VQ/decoder training)."""

    code_learning: CodeLearningConfig = field(
        default_factory=lambda: CodeLearningConfig(**VARIANTS["basic_pq"])  # type: ignore[arg-type]
    )


def _swap(fe: Any, name: str, table: EmbeddingTable) -> EmbeddingTable:
    """``fe.tables[name] = table``; returns the previous table."""
    old = fe.tables[name]
    fe.tables[name] = table
    return old


def dense_reason(v: int, d: int, m: int, k: int, layout: Layout, min_vocab: int) -> str | None:
    """Why a ``V x D`` field stays dense, or None to quantize it (spec/MEC.md, Stage 0):
    at least ``min_vocab`` rows and a dense table larger than the PQ one."""
    pq_bytes = pq_table_bytes(v, d, m, k, layout)
    if v < min_vocab:
        return f"vocab {v} < min_vocab {min_vocab}"
    if v * d * 4 <= pq_bytes:
        return f"dense table ({v * d * 4} B) is not larger than PQ ({pq_bytes} B)"
    return None


def select_fields(model: CTRModel, cfg: MECConfig) -> tuple[list[str], dict[str, str]]:
    """Fields to quantize and, for the others, why not (spec/MEC.md, Stage 0)."""
    tables = model.embedding.tables
    if cfg.fields is not None:
        unknown = [f for f in cfg.fields if f not in tables]
        if unknown:
            raise ConfigError(f"fields: {unknown} are not sparse fields (have: {', '.join(tables)})")
        return list(cfg.fields), {f: "not listed" for f in tables if f not in cfg.fields}
    chosen, skipped = [], {}
    for name, table in tables.items():
        v, d = table.num_embeddings, table.embedding_dim
        m, k = cfg.num_subspaces, cfg.codebook_size
        reason = dense_reason(v, d, m, k, cfg.code_learning.layout, cfg.min_vocab)
        if reason is not None:
            skipped[name] = reason
        elif isinstance(table, PQTable):
            skipped[name] = "already quantized"
        else:
            chosen.append(name)
    return chosen, skipped


def check_subspaces(model: CTRModel, cfg: MECConfig, chosen: list[str]) -> None:
    """Refuse, before any work, a PQ split of a chosen field into ``num_subspaces`` parts that
    does not divide its width (RQ/AQ codebooks are full width: any M works).

    Raises:
        ConfigError: naming ``num_subspaces``, the width and the field.
    """
    if cfg.code_learning.quantizer != "pq":
        return
    for name in chosen:
        d = model.embedding.tables[name].embedding_dim
        if d % cfg.num_subspaces:
            raise ConfigError(
                f"num_subspaces={cfg.num_subspaces} does not divide the embedding width {d} of field "
                f"{name!r}; use a divisor of {d} (or code_learning.quantizer rq/aq)"
            )


@register_method("mec", MECConfig)
class MEC(CompressionMethod[MECConfig]):
    """Stage 1 per field, swap, plug-in AUC, stage-2 protocol; returns a JSON-able report."""

    def run(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        from ctrzip.train import evaluate

        if data is None:
            raise CompressionError("MEC needs data: training counts, a train split and a valid split")
        cfg = self.config
        dev = resolve_device(cfg.device)
        model.to(dev)

        def score() -> dict[str, float]:
            return evaluate(model, data["valid"], batch_size=cfg.eval_batch_size, device=dev)

        chosen, skipped = select_fields(model, cfg)
        check_subspaces(model, cfg, chosen)
        report: dict[str, Any] = {"fields": {}, "skipped": skipped, "protocol": cfg.protocol}
        report["sizes_before"] = model_bytes(model)
        report["base"] = score()
        lr_tables = first_order_embeddings(model)
        swaps: list[tuple[Any, str, EmbeddingTable]] = []
        for name in chosen:
            field_report, new = self._quantize_field(model, name, data, lr_tables, dev)
            if cfg.plugin_per_field:  # this field alone on codes
                old = [_swap(fe, n, t) for fe, n, t in new]
                field_report["plugin"] = score()
                for (fe, n, _), t in zip(new, old, strict=True):
                    _swap(fe, n, t)
            report["fields"][name] = field_report
            swaps.extend(new)
        for fe, n, t in swaps:
            _swap(fe, n, t)
        report["plugin"] = score()
        if cfg.protocol != "none" and chosen:
            stage = cfg.finetune if cfg.protocol == "finetune" else cfg.retrain
            run = finetune if cfg.protocol == "finetune" else retrain
            hist = run(model, data, stage, cfg.seed, str(dev))
            report["history"] = {"best": hist.best, "best_epoch": hist.best_epoch, "steps": hist.steps}
            report["final"] = score()
        else:
            report["final"] = report["plugin"]
        after = model_bytes(model)
        report["sizes"] = after
        report["ratio"] = report["sizes_before"]["total"] / max(1, after["total"])
        report["ratio_packed"] = report["sizes_before"]["total"] / max(1, after["total_packed"])
        report["size_report"] = size_report(model)["components"]
        return report

    def _quantize_field(
        self,
        model: CTRModel,
        name: str,
        data: EncodedDataset,
        lr_tables: dict[str, Any],
        dev: torch.device,
    ) -> tuple[dict[str, Any], list[tuple[Any, str, EmbeddingTable]]]:
        """Stage 1 on the real ids of one field; returns its report and the tables to swap in
        as ``(field_embedding, field, table)``."""
        from ctrzip.train import evaluate

        cfg = self.config
        table: EmbeddingTable = model.embedding.tables[name]  # type: ignore[assignment]
        v = table.num_embeddings
        weight = table.materialize().to(dev)
        counts_all = as_tensor_counts(data.counts.get(name), v)
        counts = counts_all[1 : v - 1]  # real ids only: padding (0) and OOV (V-1) stay dense
        score = None
        if cfg.code_learning.select_every > 0:

            def score(decoded: torch.Tensor) -> float:
                """Valid AUC with this field's rows decoded (first-order weights still dense)."""
                trial = weight.clone()
                trial[1 : v - 1] = decoded
                old = _swap(model.embedding, name, DenseTable.from_tensor(trial).to(dev))
                try:
                    return evaluate(model, data["valid"], batch_size=cfg.eval_batch_size, device=dev)["auc"]
                finally:
                    _swap(model.embedding, name, old)

        res: CodeLearningResult = fit_codes(
            weight[1 : v - 1],
            counts.to(dev),
            cfg.num_subspaces,
            cfg.codebook_size,
            cfg.code_learning,
            cfg.seed,
            score=score,
        )
        codes = torch.zeros(v, cfg.num_subspaces, dtype=torch.long, device=dev)
        codes[1 : v - 1] = res.codes
        pq = PQTable.from_dense(table, PQFit(codes, res.codebooks, res.layout, res.bias)).to(dev)
        new: list[tuple[Any, str, EmbeddingTable]] = [(model.embedding, name, pq)]
        first_order = "none"
        for fe in lr_tables.values():
            if name in fe.tables:
                if cfg.first_order == "codes":
                    w = popularity_weights(counts, cfg.code_learning.weighting).to(dev)
                    new.append(
                        (fe, name, first_order_table(fe.tables[name], pq, w, f"embedding.tables.{name}"))
                    )
                first_order = cfg.first_order
        diag = code_diagnostics(res.codes, counts, cfg.codebook_size, cfg.head_frac, cfg.tail_frac)
        err = (res.decoded - weight[1 : v - 1].float()).pow(2).sum() / weight[1 : v - 1].float().pow(2).sum()
        return {
            "vocab": v,
            "M": cfg.num_subspaces,
            "K": cfg.codebook_size,
            "codes_dtype": str(pq.codes.dtype).replace("torch.", ""),
            "layout": res.layout,
            "first_order": first_order,
            "relative_error": float(err),
            "stage1": res.summary(),
            "diagnostics": summarize(diag),
            "diagnostics_full": diag,
            "counts_present": bool(name in data.counts),
        }, new


@register_method("pq", PQConfig)
class PQ(MEC):
    """Basic product quantization: ``MEC`` run with the ``basic_pq`` preset."""
