"""Row-wise quantization as a compression method (``rowwise``, ``fp16``, ``int8``, ``int4``, ``int2``).

Post-training, data-free apart from the validation pass that reports AUC: every selected
float table (and, by default, the first-order tables of LR-style parts) becomes a
``RowwiseQuantTable``. A table whose quantized form would not be smaller (e.g. int8 rows of
a 1-wide first-order table: 9 B > 4 B per row) stays as it is and the report says why.
FBGEMM / TorchRec ship the same format; Guan et al. (2019) report int4 rows at neutral quality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ctrzip.compression.api import CompressionMethod, TargetDecision, register_method
from ctrzip.compression.posttraining import PostTrainingOptions, swap_and_report
from ctrzip.compression.select import tables
from ctrzip.compression.shrink import compressed, decide, not_smaller, refuse_listed, require_some
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.loader import resolve_device
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.embedding.rowwise import BITS, RowwiseQuantTable, row_bytes


@dataclass
class RowwiseConfig(PostTrainingOptions):
    """Row-wise quantized embedding rows.

    Args:
        bits: 16 (fp16), 8, 4 or 2 bits per stored value; int rows add a per-row scale and
            bias (8 B for int8, 4 B for int4/int2).
        fields: field-name globs (None = every sparse field); a listed field that cannot shrink
            is an error, an unlisted one is kept with a reason.
        first_order: also quantize first-order (dimension-1) tables of LR-style parts.
        optimized_qparams: int4/int2 only: search each row's range for the least squared
            error (PyTorch's prepack option, ~15 us per row) instead of min/max.
        (and ``PostTrainingOptions``: eval_split, batch_size, device)
        version: config schema version.

    Raises:
        CompressionError: ``bits`` not in (16, 8, 4, 2), or a preset's bits overridden.
    """

    bits: int = 8
    fields: tuple[str, ...] | None = None
    first_order: bool = True
    optimized_qparams: bool = True
    version: int = 1

    preset_bits: ClassVar[int | None] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits not in BITS:
            raise CompressionError(f"rowwise: bits must be one of {BITS}, got {self.bits}")
        if self.preset_bits is not None and self.bits != self.preset_bits:
            raise CompressionError(
                f"{type(self).__name__} fixes bits={self.preset_bits}; "
                f"use method 'rowwise' with bits={self.bits} instead"
            )


@dataclass
class FP16Config(RowwiseConfig):
    """fp16 rows (2 B per value, no scale or bias)."""

    bits: int = 16
    preset_bits: ClassVar[int | None] = 16


@dataclass
class Int8Config(RowwiseConfig):
    """int8 rows with a float32 scale and bias per row."""

    bits: int = 8
    preset_bits: ClassVar[int | None] = 8


@dataclass
class Int4Config(RowwiseConfig):
    """int4 rows with a float16 scale and bias per row."""

    bits: int = 4
    preset_bits: ClassVar[int | None] = 4


@dataclass
class Int2Config(RowwiseConfig):
    """int2 rows with a float16 scale and bias per row."""

    bits: int = 2
    preset_bits: ClassVar[int | None] = 2


def _targets(model: CTRModel, cfg: RowwiseConfig) -> list[tuple[str, FieldEmbedding, str, bool]]:
    """``(fqn, field_embedding, field, listed)`` for every table the config asks about."""
    out = [
        (f"embedding.tables.{n}", model.embedding, n, cfg.fields is not None)
        for n in tables(model, cfg.fields)
    ]
    if cfg.first_order:
        for prefix, fe in model.named_modules():
            if isinstance(fe, FieldEmbedding) and fe is not model.embedding and fe.dim == 1:
                names = list(fe.tables) if cfg.fields is None else list(tables(model, cfg.fields))
                out += [(f"{prefix}.tables.{n}", fe, n, False) for n in names if n in fe.tables]
    return out


class _Rowwise(CompressionMethod[RowwiseConfig]):
    """Swap float tables for ``RowwiseQuantTable``; no training."""

    def run(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        cfg = self.config
        dev = resolve_device(cfg.device)
        model.to(dev)
        decisions: list[TargetDecision] = []
        for fqn, fe, name, listed in _targets(model, cfg):
            old = fe.tables[name]
            before = old.nbytes()
            after = old.num_embeddings * row_bytes(old.embedding_dim, cfg.bits)
            reason = not_smaller(f"{cfg.bits}-bit rows", before, after)
            if type(old) is not DenseTable:
                reason = f"already compressed ({type(old).__name__}); rowwise takes float tables"
            if reason and listed:
                raise refuse_listed(self.key, "fields", name, reason)
            decisions.append(decide(fqn, "table", before, after, reason))
        require_some(
            self.key, decisions, "row-wise rows must be smaller than the float rows: list float tables"
        )
        builds = {
            d["target"]: lambda old: RowwiseQuantTable.from_dense(
                old.materialize(), cfg.bits, getattr(old, "padding_idx", 0), cfg.optimized_qparams
            )
            for d in compressed(decisions)
        }
        report = swap_and_report(
            model, data, builds, decisions, eval_split=cfg.eval_split, batch_size=cfg.batch_size, device=dev
        )
        return {"bits": cfg.bits, **report}


@register_method("rowwise", RowwiseConfig)
class Rowwise(_Rowwise):
    """Row-wise quantization at any of 16, 8, 4, 2 bits."""


@register_method("fp16", FP16Config)
class FP16(_Rowwise):
    """fp16 rows."""


@register_method("int8", Int8Config)
class Int8(_Rowwise):
    """int8 rows."""


@register_method("int4", Int4Config)
class Int4(_Rowwise):
    """int4 rows."""


@register_method("int2", Int2Config)
class Int2(_Rowwise):
    """int2 rows."""
