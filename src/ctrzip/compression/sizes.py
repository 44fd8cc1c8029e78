"""Bytes and parameter counts per component: embedding tables, first-order tables, the rest.

Why: compression claims are about bytes, and a compressed table's parameter count says
little (codes are integer buffers, codebooks are tiny). Tables report their own honest
size through ``EmbeddingTable.nbytes()``; everything else counts every parameter and
persistent buffer it stores. Each tensor is counted once even when shared.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ctrzip.nn.embedding.base import EmbeddingTable, tensor_bytes
from ctrzip.nn.embedding.field import FieldEmbedding

MB = 2**20
COMPONENTS = ("embedding", "first_order", "dense")


def _persistent_tensors(module: nn.Module) -> list[Tensor]:
    """Parameters and persistent buffers of ``module`` (recursively), shared ones once."""
    tensors = list(module.parameters())
    for mod in module.modules():
        for name, buf in mod.named_buffers(recurse=False):
            if buf is not None and name not in mod._non_persistent_buffers_set:
                tensors.append(buf)
    seen: set[int] = set()
    return [t for t in tensors if not (id(t) in seen or seen.add(id(t)))]


def _field_embedding_size(fe: nn.Module, prefix: str, tables: dict[str, Any], seen: set[int]) -> dict:
    """Size of one ``FieldEmbedding``: tables via ``nbytes()``, other tensors by storage."""
    params = nbytes = 0
    counted: list[str] = []
    for name, table in fe.named_modules(prefix=prefix):
        if not isinstance(table, EmbeddingTable) or id(table) in seen:
            continue
        if any(name.startswith(c + ".") for c in counted):
            continue  # a table inside a composite table (a BandedTable's row-wise band): in its nbytes
        seen.add(id(table))
        counted.append(name)
        tensors = [t for t in _persistent_tensors(table) if id(t) not in seen]
        seen.update(id(t) for t in tensors)
        t_params = sum(p.numel() for p in table.parameters())
        t_bytes = int(table.nbytes())
        tables[name] = {
            "type": type(table).__name__,
            "rows": int(table.num_embeddings),
            "dim": int(table.embedding_dim),
            "params": t_params,
            "bytes": t_bytes,
        }
        params, nbytes = params + t_params, nbytes + t_bytes
    for t in _persistent_tensors(fe):  # dense-field vectors and anything outside the tables
        if id(t) not in seen:
            seen.add(id(t))
            params += t.numel() if isinstance(t, nn.Parameter) else 0
            nbytes += tensor_bytes(t)
    return {"params": params, "bytes": nbytes}


def _entry(params: int, nbytes: int) -> dict[str, Any]:
    return {"params": int(params), "bytes": int(nbytes), "mb": nbytes / MB}


def size_report(model: nn.Module) -> dict[str, Any]:
    """Sizes of ``model`` by component.

    Components: ``embedding`` (every ``FieldEmbedding`` under ``model.embedding``),
    ``first_order`` (any other ``FieldEmbedding``, e.g. ``model.first_order.embedding``)
    and ``dense`` (all remaining parameters and persistent buffers). ``params`` counts
    ``nn.Parameter`` elements; ``bytes`` is storage (``nbytes()`` for tables); ``mb`` is
    ``bytes / 2**20``.

    Returns:
        ``{"components": {name: {params, bytes, mb}}, "tables": {fqn: {type, rows, dim,
        params, bytes}}, "total": {params, bytes, mb}}``.
    """
    seen: set[int] = set()
    tables: dict[str, Any] = {}
    sums = {c: [0, 0] for c in COMPONENTS}
    for fqn, module in model.named_modules():
        if not isinstance(module, FieldEmbedding) or id(module) in seen:
            continue
        seen.add(id(module))
        comp = "embedding" if fqn == "embedding" or fqn.startswith("embedding.") else "first_order"
        size = _field_embedding_size(module, fqn, tables, seen)
        sums[comp][0] += size["params"]
        sums[comp][1] += size["bytes"]
    for t in _persistent_tensors(model):
        if id(t) not in seen:
            seen.add(id(t))
            sums["dense"][0] += t.numel() if isinstance(t, nn.Parameter) else 0
            sums["dense"][1] += tensor_bytes(t)
    components = {c: _entry(*sums[c]) for c in COMPONENTS}
    total = _entry(sum(v[0] for v in sums.values()), sum(v[1] for v in sums.values()))
    return {"components": components, "tables": tables, "total": total}


def format_size_report(report: dict[str, Any], *, tables: bool = False) -> str:
    """A small fixed-width table of ``size_report`` output (optionally one line per table)."""
    rows = [(name, c["params"], c["bytes"]) for name, c in report["components"].items()]
    if tables:
        rows += [(f"  {fqn} ({t['type']})", t["params"], t["bytes"]) for fqn, t in report["tables"].items()]
    rows.append(("total", report["total"]["params"], report["total"]["bytes"]))
    width = max(12, *(len(r[0]) for r in rows))
    lines = [f"{'component':<{width}} {'params':>14} {'bytes':>14} {'MB':>10}"]
    for name, params, nbytes in rows:
        lines.append(f"{name:<{width}} {params:>14,} {nbytes:>14,} {nbytes / MB:>10.3f}")
    return "\n".join(lines)
