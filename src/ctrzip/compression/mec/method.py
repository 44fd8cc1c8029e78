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
from typing import Any, ClassVar, Literal

import torch

from ctrzip import distributed as dist
from ctrzip.compression.api import CompressionMethod, register_method
from ctrzip.compression.finetune import split_or_error
from ctrzip.compression.mec.diagnostics import as_tensor_counts, code_diagnostics, summarize
from ctrzip.compression.mec.fields import (
    check_composable,
    check_subspaces,
    field_decisions,
    first_order_tables,
)
from ctrzip.compression.mec.losses import popularity_weights
from ctrzip.compression.mec.stage1 import CodeLearningConfig, CodeLearningResult
from ctrzip.compression.mec.stage1_batched import fit_codes_batched
from ctrzip.compression.mec.stage2 import (
    FINETUNE_PRESET,
    RETRAIN_PRESET,
    StageTwoConfig,
    finetune,
    first_order_embeddings,
    first_order_table,
    retrain,
)
from ctrzip.compression.sharded import pin_result, sharded_evaluate
from ctrzip.compression.shrink import (
    module_bytes,
    require_some,
)
from ctrzip.compression.sizes import byte_breakdown
from ctrzip.config import ConfigError, overlay
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.loader import resolve_device
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.base import DenseTable, EmbeddingTable
from ctrzip.nn.embedding.pq import PQFit, PQTable
from ctrzip.nn.swappable import replace_modules
from ctrzip.progress import ProgressBars
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
        min_vocab: quantize fields with at least this many rows whose dense table (with its
            first-order table when ``first_order`` is ``codes``) is larger than the PQ form
            (ignored when ``fields`` is given).
        fields: field names or globs (``C1*``) to quantize (None = the selection rule); a field
            named literally whose PQ form would not be smaller is refused (``CompressionError``);
            a glob's fields that cannot shrink are kept with their reason.
        code_learning: stage-1 knobs (quantizer, encoder, weights, alpha, beta, epochs, ...);
            the fields set here change only those fields of the method's preset (``mec``
            for ``MECConfig``, ``basic_pq`` for ``PQConfig``).
        first_order: ``codes`` (first-order weights of quantized fields as a dim-1 PQ table
            on the same codes) or ``dense`` (keep the V x 1 table).
        protocol: ``finetune`` (default), ``retrain`` or ``none`` (plug-in only).
        finetune: training of the ``finetune`` protocol (preset ``FINETUNE_PRESET``: 1 epoch
            at lr 1e-4); fields set here change only those fields.
        retrain: training of the ``retrain`` protocol, from scratch (preset ``RETRAIN_PRESET``:
            2 epochs at lr 1e-3, patience 2); fields set here change only those fields.
        plugin_per_field: also report each field's plug-in AUC alone (one validation pass each).
        eval_batch_size: validation batch size.
        head_frac: head band of the diagnostics (top fraction of ids by count).
        tail_frac: tail band (bottom fraction of ids by count).
        seed: seeds stage 1 and stage 2.
        device: ``auto``, ``cpu``, ``cuda``.
        progress: a progress bar per field's stage 1 (steps, rows/s, ETA) and for the fine-tune.
        version: config schema version.

    Training counts (``counts.npz`` of the dataset folder) are required unless
    ``code_learning.weighting`` is ``none``: a missing file is an error, never uniform weights.
    """

    PRESET: ClassVar[str] = "mec"  # the VARIANTS entry code_learning starts from

    num_subspaces: int = 4
    codebook_size: int = 256
    min_vocab: int = 10_000
    fields: tuple[str, ...] | None = None
    code_learning: CodeLearningConfig = field(default_factory=CodeLearningConfig)
    first_order: Literal["codes", "dense"] = "codes"
    protocol: Literal["finetune", "retrain", "none"] = "finetune"
    finetune: StageTwoConfig = field(default_factory=StageTwoConfig)
    retrain: StageTwoConfig = field(default_factory=StageTwoConfig)
    plugin_per_field: bool = True
    eval_batch_size: int = 8192
    head_frac: float = 0.01
    tail_frac: float = 0.8
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    version: int = 1

    def __post_init__(self) -> None:
        # presets stay what they are: only the nested fields the caller set replace the preset's
        self.code_learning = overlay(CodeLearningConfig(**VARIANTS[self.PRESET]), self.code_learning)
        self.finetune = overlay(StageTwoConfig(**FINETUNE_PRESET), self.finetune)
        self.retrain = overlay(StageTwoConfig(**RETRAIN_PRESET), self.retrain)
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

        Code-learning fields may be overridden too (``epochs=2``) on top of the preset; every
        other field keeps the preset's value.
        """
        if name not in VARIANTS:
            raise UnknownNameError(f"unknown MEC variant {name!r} (known: {', '.join(VARIANTS)})")
        cl_names = {f.name for f in dataclasses.fields(CodeLearningConfig)}
        cl = {k: v for k, v in overrides.items() if k in cl_names}
        top = {k: v for k, v in overrides.items() if k not in cl_names}
        # replace() sets every field, so the variant is complete whatever cls's own preset is
        code_learning = dataclasses.replace(CodeLearningConfig(**VARIANTS[name]), **cl)
        return cls(code_learning=code_learning, **top)


@dataclass
class PQConfig(MECConfig):
    """Basic product quantization (the ``pq`` method): MEC without popularity weights,
    PWR or contrastive terms (k-means init + VQ/decoder training). ``code_learning`` starts
    from the ``basic_pq`` preset; the fields set there change only those fields."""

    PRESET: ClassVar[str] = "basic_pq"


def _swap(model: CTRModel, tables: list[tuple[str, EmbeddingTable]]) -> list[tuple[str, EmbeddingTable]]:
    """Put ``(fqn, table)`` pairs into ``model`` together; returns the previous ones.

    One ``replace_modules`` call, so a field's table and the first-order table sharing its
    codes are swapped as a unit, and links of other modules to them are handed over.
    """
    old = replace_modules(model, dict(tables))
    return [(fqn, old[fqn]) for fqn, _ in tables]  # type: ignore[misc]


@register_method("mec", MECConfig)
class MEC(CompressionMethod[MECConfig]):
    """Stage 1 (all chosen fields in one batched loop, ``fit_codes_batched``), swap, plug-in
    AUC, stage-2 protocol; returns a JSON-able report."""

    def run(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        if data is None:
            raise CompressionError(
                f"{self.key} needs an encoded dataset (training counts, a train and a valid split): "
                f"compress(model, config, EncodedDataset.open(DIR))"
            )
        cfg = self.config
        check_composable(model, cfg)
        dev = resolve_device(cfg.device)
        model.to(dev)
        valid = split_or_error(data, "valid", f"{self.key} reports the plug-in AUC on it")
        if cfg.protocol != "none":
            split_or_error(data, "train", f"protocol {cfg.protocol!r} trains on it")

        def score() -> dict[str, float]:
            return sharded_evaluate(model, valid, batch_size=cfg.eval_batch_size, device=dev)

        decisions = field_decisions(model, cfg, self.key)
        require_some(self.key, decisions, "lower min_vocab or codebook_size, or list fields that can shrink")
        names = list(model.embedding.tables)
        chosen = [n for n, d in zip(names, decisions, strict=True) if d["action"] == "compressed"]
        skipped = {n: d["reason"] for n, d in zip(names, decisions, strict=True) if d["action"] == "kept"}
        self._check_counts(model, data, chosen)
        check_subspaces(model, cfg, chosen)
        report: dict[str, Any] = {"fields": {}, "skipped": skipped, "protocol": cfg.protocol}
        report["sizes_before"] = byte_breakdown(model)
        report["base"] = score()
        lr_tables = first_order_embeddings(model)
        swaps: list[tuple[str, EmbeddingTable]] = []
        with ProgressBars(cfg.progress and dist.is_main()) as bars:
            learned = self._learn_codes(model, chosen, data, dev, bars)
            for name in chosen:
                field_report, new = self._quantize_field(model, name, data, lr_tables, dev, learned[name])
                if cfg.plugin_per_field:  # this field alone on codes
                    old = _swap(model, new)
                    field_report["plugin"] = score()
                    _swap(model, old)
                report["fields"][name] = field_report
                swaps.extend(new)
                st = field_report["stage1"]
                plug = (
                    f", plug-in AUC {field_report['plugin']['auc']:.4f}" if "plugin" in field_report else ""
                )
                bars.log(
                    f"stage 1 {name}: {field_report['vocab']:,} rows, {st['steps']} steps x "
                    f"{st['batch_size']} rows in {st['seconds']:.1f} s{plug}"
                )
        _swap(model, swaps)
        report["plugin"] = score()
        if cfg.protocol != "none" and chosen:
            stage = cfg.finetune if cfg.protocol == "finetune" else cfg.retrain
            run = finetune if cfg.protocol == "finetune" else retrain
            result = run(model, data, stage, cfg.seed, str(dev), progress=cfg.progress)
            report["history"] = result.summary()
            report["final"] = score()
        else:
            report["final"] = report["plugin"]
        for name, d in zip(names, decisions, strict=True):  # measured, not predicted
            if d["action"] == "compressed":
                lr = first_order_tables(model, name) if cfg.first_order == "codes" else []
                d["bytes_after"] = module_bytes(model.embedding.tables[name]) + sum(
                    module_bytes(t) for t in lr
                )
        report["targets"] = decisions
        before, after = report["sizes_before"], byte_breakdown(model)
        report["metrics"] = {"before": report["base"], "direct": report["plugin"], "final": report["final"]}
        report["sizes"] = after
        report["bytes"] = {"before": before["total"], "after": after["total"]}
        report["ratio"] = before["total"] / max(1, after["total"])
        report["ratio_packed_projection"] = before["total"] / max(1, after["total_packed_projection"])
        return report

    def _check_counts(self, model: CTRModel, data: EncodedDataset, chosen: list[str]) -> None:
        """Training counts for every chosen field, unless ``weighting: none`` needs none.

        Raises:
            CompressionError: ``counts.npz`` is missing, lacks a field or has a wrong length.
        """
        weighting = self.config.code_learning.weighting
        path = data.root / "counts.npz"
        fix = (
            "re-encode the dataset with `ctrzip data encode` (it writes counts.npz from the train "
            "split), or set code_learning.weighting: none to weight every id equally"
        )
        for name in chosen:
            counts = data.counts.get(name)
            v = model.embedding.tables[name].num_embeddings
            if counts is None:
                if weighting == "none":
                    continue
                what = "is missing" if not path.exists() else f"has no counts for field {name!r}"
                raise CompressionError(
                    f"{path} {what}: MEC weights ids by training popularity "
                    f"(code_learning.weighting: {weighting}); {fix}"
                )
            if len(counts) != v:
                raise CompressionError(
                    f"{path}: field {name!r} has {len(counts)} counts but the model's table has "
                    f"{v} rows; {fix}"
                )

    def _learn_codes(
        self, model: CTRModel, chosen: list[str], data: EncodedDataset, dev: torch.device, bars: ProgressBars
    ) -> dict[str, CodeLearningResult]:
        """Stage 1 on the real ids (padding 0 and OOV V-1 stay dense) of every chosen field, the
        fields of one width in one batched loop (``fit_codes_batched``)."""
        cfg = self.config
        tables, counts, scores = [], [], []
        for name in chosen:
            fqn = f"embedding.tables.{name}"
            table: EmbeddingTable = model.embedding.tables[name]  # type: ignore[assignment]
            v = table.num_embeddings
            weight = table.materialize().to(dev)
            tables.append(weight[1 : v - 1])
            counts.append(as_tensor_counts(data.counts.get(name), v)[1 : v - 1].to(dev))
            score = None
            if cfg.code_learning.select_every > 0:

                def score(decoded: torch.Tensor, weight: torch.Tensor = weight, fqn: str = fqn) -> float:
                    """Valid AUC with this field's rows decoded (first-order weights still dense)."""
                    trial = weight.clone()
                    trial[1 : len(weight) - 1] = decoded
                    old = _swap(model, [(fqn, DenseTable.from_tensor(trial).to(dev))])
                    try:
                        valid = data["valid"]
                        return sharded_evaluate(model, valid, batch_size=cfg.eval_batch_size, device=dev)[
                            "auc"
                        ]
                    finally:
                        _swap(model, old)

            scores.append(score)
        results = fit_codes_batched(
            tables,
            counts,
            cfg.num_subspaces,
            cfg.codebook_size,
            cfg.code_learning,
            cfg.seed,
            scores=scores,
            bars=bars,
            labels=[f"stage 1 {name}" for name in chosen],
        )
        # every rank fitted the fields; all keep rank 0's codes (CUDA k-means varies in the last bits)
        return {name: pin_result(res) for name, res in zip(chosen, results, strict=True)}

    def _quantize_field(
        self,
        model: CTRModel,
        name: str,
        data: EncodedDataset,
        lr_tables: dict[str, Any],
        dev: torch.device,
        res: CodeLearningResult,
    ) -> tuple[dict[str, Any], list[tuple[str, EmbeddingTable]]]:
        """Swap-in tables for one field from its stage-1 result ``res``; returns its report and
        the tables to swap in as ``(fqn, table)``."""
        cfg = self.config
        fqn = f"embedding.tables.{name}"
        table: EmbeddingTable = model.embedding.tables[name]  # type: ignore[assignment]
        v = table.num_embeddings
        weight = table.materialize().to(dev)
        counts = as_tensor_counts(data.counts.get(name), v)[1 : v - 1]  # real ids only
        codes = torch.zeros(v, cfg.num_subspaces, dtype=torch.long, device=dev)
        codes[1 : v - 1] = res.codes
        pq = PQTable.from_dense(table, PQFit(codes, res.codebooks, res.layout, res.bias)).to(dev)
        new: list[tuple[str, EmbeddingTable]] = [(fqn, pq)]
        first_order = "none"
        for fe_fqn, fe in lr_tables.items():
            if name in fe.tables:
                if cfg.first_order == "codes":
                    w = popularity_weights(counts, cfg.code_learning.weighting).to(dev)
                    new.append((f"{fe_fqn}.tables.{name}", first_order_table(fe.tables[name], pq, w, fqn)))
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
