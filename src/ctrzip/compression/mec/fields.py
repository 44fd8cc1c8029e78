"""Which fields MEC quantizes (spec/MEC.md, Stage 0) and the checks before any work.

One decision per sparse field from the shrink rule (``compression.shrink``): the field's
table plus its first-order tables (when they share the codes) against the PQ form;
``dense_reason`` is the same rule on sizes alone, for the byte projection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ctrzip.compression.api import TargetDecision
from ctrzip.compression.mec.stage2 import first_order_embeddings
from ctrzip.compression.select import match
from ctrzip.compression.shrink import decide, explicit_names, module_bytes, not_smaller, refuse_listed
from ctrzip.config import ConfigError
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.pq import Layout, PQTable, pq_float_bytes, pq_table_bytes
from ctrzip.nn.swappable import SWAPPABLE

if TYPE_CHECKING:
    from ctrzip.compression.mec.method import MECConfig


def check_composable(model: CTRModel, cfg: MECConfig) -> None:
    """Refuse, before touching the model, what MEC cannot do on an already-compressed model.

    Raises:
        CompressionError: a field listed in ``fields`` is already product-quantized, or the
            ``retrain`` protocol (which rebuilds the network from scratch) meets a network
            module that an earlier compression replaced.
    """
    if cfg.fields is not None:
        for name in explicit_names(cfg.fields):
            table = dict(model.embedding.tables.items()).get(name)
            if isinstance(table, PQTable):
                raise CompressionError(
                    f"fields: {name!r} is already product-quantized ({type(table).__name__}, "
                    f"M={table.num_subspaces}, K={table.codebook_size}); quantizing codes again is "
                    "not supported: leave it out of fields or compress the dense model"
                )
    if cfg.protocol == "retrain":
        for fqn, mod in model.named_modules():
            if type(mod).__name__ in SWAPPABLE and not isinstance(mod, EmbeddingTable):
                raise CompressionError(
                    f"protocol: 'retrain' rebuilds the network from scratch, but {fqn} was "
                    f"replaced by an earlier compression ({type(mod).__name__}); use "
                    "protocol 'finetune' or 'none', or run MEC first"
                )


def pq_field_bytes(
    v: int, d: int, m: int, k: int, layout: Layout, first_order: bool = False
) -> tuple[int, int]:
    """``(dense, pq)`` bytes of a ``V x D`` fp32 field, with its ``V x 1`` first-order table
    when ``first_order`` (which then becomes a dim-1 table on the same codes, floats only)."""
    dense = v * d * 4 + (v * 4 if first_order else 0)
    pq = pq_table_bytes(v, d, m, k, layout) + (pq_float_bytes(1, m, k, "additive") if first_order else 0)
    return dense, pq


def pq_reason(v: int, d: int, m: int, k: int, layout: Layout, before: int, after: int) -> str | None:
    """Why a field cannot be quantized at ``M``, ``K`` (None when it can and shrinks)."""
    if layout == "concat" and d % m:
        return f"num_subspaces {m} does not divide the embedding dim {d}"
    if k > v - 2:
        return f"codebook_size {k:,} exceeds the field's {v - 2:,} coded rows (ids 1..V-2)"
    return not_smaller(f"PQ (M={m}, K={k})", before, after)


def dense_reason(
    v: int, d: int, m: int, k: int, layout: Layout, min_vocab: int, first_order: bool = False
) -> str | None:
    """Why a ``V x D`` fp32 field stays dense, or None to quantize it (spec/MEC.md, Stage 0):
    at least ``min_vocab`` rows and a PQ form (first-order table included when ``first_order``)
    smaller than the dense one. The rule ``select_fields`` and the byte projection apply."""
    if v < min_vocab:
        return f"vocab {v} < min_vocab {min_vocab}"
    return pq_reason(v, d, m, k, layout, *pq_field_bytes(v, d, m, k, layout, first_order))


def first_order_tables(model: CTRModel, name: str) -> list[EmbeddingTable]:
    return [fe.tables[name] for fe in first_order_embeddings(model).values() if name in fe.tables]  # type: ignore[misc]


def field_decisions(model: CTRModel, cfg: MECConfig, method: str = "mec") -> list[TargetDecision]:
    """One decision per sparse field (spec/MEC.md, Stage 0), bytes of the field's table plus its
    first-order tables when ``cfg.first_order`` is ``codes``.

    Raises:
        CompressionError: ``cfg.fields`` names an unknown field, or a listed field whose PQ form
            cannot be smaller (the message names the field and the bytes).
    """
    tables = model.embedding.tables
    listed: set[str] = set()  # fields named literally: they must shrink or be refused
    selected: set[str] | None = None  # fields matched by ``cfg.fields`` (names or globs)
    if cfg.fields is not None:
        unknown = [f for f in cfg.fields if not match(tables, [f])]
        if unknown:
            raise CompressionError(
                f"{method}: fields {unknown} match no sparse field (have: {', '.join(tables)})"
            )
        selected, listed = set(match(tables, cfg.fields)), explicit_names(cfg.fields)
    m, k, layout = cfg.num_subspaces, cfg.codebook_size, cfg.code_learning.layout
    out = []
    for name, table in tables.items():
        v, d = table.num_embeddings, table.embedding_dim  # type: ignore[union-attr]
        lr = first_order_tables(model, name) if cfg.first_order == "codes" else []
        before = module_bytes(table) + sum(module_bytes(t) for t in lr)
        after = pq_table_bytes(v, d, m, k, layout) + len(lr) * pq_float_bytes(1, m, k, "additive")
        if selected is not None and name not in selected:
            reason: str | None = "not listed in fields"
        elif isinstance(table, PQTable):
            reason = "already quantized"
        elif cfg.fields is None and v < cfg.min_vocab:
            reason = f"vocab {v} < min_vocab {cfg.min_vocab}"
        else:
            reason = pq_reason(v, d, m, k, layout, before, after)
        if reason is not None and name in listed:
            raise refuse_listed(method, "fields", name, reason)
        out.append(decide(f"embedding.tables.{name}", "table", before, after, reason))
    return out


def select_fields(model: CTRModel, cfg: MECConfig) -> tuple[list[str], dict[str, str]]:
    """Fields to quantize and, for the others, why not (``field_decisions``)."""
    chosen, skipped = [], {}
    for name, d in zip(model.embedding.tables, field_decisions(model, cfg), strict=True):
        if d["action"] == "compressed":
            chosen.append(name)
        else:
            skipped[name] = d["reason"]
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
