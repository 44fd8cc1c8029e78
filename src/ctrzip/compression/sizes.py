"""Bytes and parameter counts of a model: the one size function used everywhere.

Why one function: compression claims are about bytes, and three ways of counting them
(per-table ``nbytes()``, a parameters-only count, the saved file) gave three numbers for one
model. Here a model's size is the bytes of the tensors ``ctrzip.save`` writes: every entry
of ``model.state_dict()`` (parameters and persistent buffers: PQ codes, BatchNorm running
statistics and counters), each ``numel * element_size``. A ``SharedCodesPQTable`` reads its
source's codes without registering them, so shared codes are counted (and saved) once.

Bit-packed code sizes are a *projection* (codes are stored in ``uint8``/``int16``/``int32``),
reported under ``projection`` and never mixed into the stored total.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.embedding.pq import PQTable

MB = 2**20
COMPONENTS = ("embedding", "first_order", "dense")


def saved_tensors(model: nn.Module) -> dict[str, Tensor]:
    """``{state_dict key: tensor}``: exactly the tensors ``ctrzip.save`` writes (no copies made)."""
    return dict(model.state_dict(keep_vars=True))


def nbytes(t: Tensor) -> int:
    """Storage bytes of one tensor: ``numel * element_size``."""
    return t.numel() * t.element_size()


def stored_bytes(model: nn.Module) -> int:
    """Bytes of every tensor ``ctrzip.save`` writes for ``model`` (the stored size, int)."""
    return sum(nbytes(t) for t in saved_tensors(model).values())


def _owner(key: str, prefixes: list[str]) -> str | None:
    """The longest prefix in ``prefixes`` that owns state key ``key`` (``prefix.`` + rest)."""
    best = None
    for p in prefixes:
        if key.startswith(p + ".") and (best is None or len(p) > len(best)):
            best = p
    return best


def _outermost(key: str, prefixes: list[str]) -> str | None:
    """The shortest prefix in ``prefixes`` that owns state key ``key``."""
    owners = [p for p in prefixes if key.startswith(p + ".")]
    return min(owners, key=len) if owners else None


def _account(model: nn.Module) -> list[tuple[str, Tensor, str, str | None, nn.Module | None, str | None]]:
    """Per saved tensor: ``(key, tensor, component, owning table fqn, table module, PQ part)``
    where the PQ part is ``codes``, ``codebooks`` (other tensors of a PQ table) or None."""
    modules = dict(model.named_modules())
    fields = [fqn for fqn, m in modules.items() if isinstance(m, FieldEmbedding) and fqn]
    tables = [fqn for fqn, m in modules.items() if isinstance(m, EmbeddingTable) and fqn]
    rows = []
    for key, t in saved_tensors(model).items():
        fe = _owner(key, fields)
        comp = "dense" if fe is None else ("embedding" if fe.split(".")[0] == "embedding" else "first_order")
        table = _outermost(key, tables)  # a table inside a table (a BandedTable's band) is its part
        tmod = modules[table] if table is not None else None
        pq = None
        if isinstance(tmod, PQTable):
            pq = "codes" if key == f"{table}.codes" else "codebooks"
        rows.append((key, t, comp, table, tmod, pq))
    return rows


def _entry(params: int, nbytes_: int) -> dict[str, Any]:
    return {"params": int(params), "bytes": int(nbytes_), "mb": nbytes_ / MB}


def size_report(model: nn.Module) -> dict[str, Any]:
    """Sizes of ``model`` by component, per table and in total; ``total.bytes`` equals the sum of
    tensor bytes in the ``model.safetensors`` that ``ctrzip.save`` writes.

    Components: ``embedding`` (tensors under ``model.embedding``), ``first_order`` (under any
    other ``FieldEmbedding``, e.g. ``model.first_order.embedding``) and ``dense`` (everything
    else: MLP, cross layers, BatchNorm statistics, biases). ``params`` counts ``nn.Parameter``
    elements (each parameter once); ``bytes`` is storage; ``mb`` is ``bytes / 2**20``.

    Returns:
        ``{"components": {name: {params, bytes, mb}}, "tables": {fqn: {type, rows, dim, params,
        bytes}}, "parts": {"codes": stored PQ code bytes, "codebooks": PQ float bytes},
        "total": {params, bytes, mb}, "projection": {"codes_packed": bytes of the same codes
        bit-packed at ceil(log2 K) bits, "total_packed": total with packed codes}}``. The
        projection is a figure for comparison, not what is stored.
    """
    sums = {c: [0, 0] for c in COMPONENTS}
    tables: dict[str, Any] = {}
    parts = {"codes": 0, "codebooks": 0}
    seen_params: set[int] = set()
    packed = 0
    for _key, t, comp, table, tmod, pq in _account(model):
        n = nbytes(t)
        p = t.numel() if isinstance(t, nn.Parameter) and id(t) not in seen_params else 0
        if isinstance(t, nn.Parameter):
            seen_params.add(id(t))
        sums[comp][0] += p
        sums[comp][1] += n
        if table is not None:
            entry = tables.setdefault(
                table,
                {
                    "type": type(tmod).__name__,
                    "rows": int(tmod.num_embeddings),  # type: ignore[union-attr]
                    "dim": int(tmod.embedding_dim),  # type: ignore[union-attr]
                    "params": 0,
                    "bytes": 0,
                },
            )
            entry["params"] += p
            entry["bytes"] += n
        if pq is not None:
            parts[pq] += n
            if pq == "codes":
                packed += tmod.packed_code_nbytes()  # type: ignore[union-attr]
    components = {c: _entry(*sums[c]) for c in COMPONENTS}
    total_bytes = sum(v[1] for v in sums.values())
    total = _entry(sum(v[0] for v in sums.values()), total_bytes)
    projection = {"codes_packed": packed, "total_packed": total_bytes - parts["codes"] + packed}
    return {
        "components": components,
        "tables": tables,
        "parts": parts,
        "total": total,
        "projection": projection,
    }


def byte_breakdown(model: nn.Module) -> dict[str, Any]:
    """The byte split of spec/MEC.md ("Reporting"), from the same count as ``size_report``.

    Returns:
        ``{"embedding", "first_order"}``: bytes of non-PQ tables (and dense-field vectors) in the
        main / first-order embeddings; ``codebooks``: float parts of PQ tables (codebooks, bias,
        dense special rows); ``codes``: PQ codes as stored; ``network``: everything else
        (BatchNorm buffers included); ``total`` (their sum, the stored size) and ``total_mb``;
        ``codes_packed_projection`` / ``total_packed_projection``: the same with codes
        bit-packed, a projection only.
    """
    out = {k: 0 for k in ("embedding", "first_order", "codebooks", "codes", "network")}
    packed = 0
    for _key, t, comp, _table, tmod, pq in _account(model):
        n = nbytes(t)
        if pq is not None:
            out[pq] += n
            if pq == "codes":
                packed += tmod.packed_code_nbytes()  # type: ignore[union-attr]
        else:
            out["network" if comp == "dense" else comp] += n
    res: dict[str, Any] = dict(out)
    res["total"] = sum(out.values())
    res["total_mb"] = res["total"] / MB
    res["codes_packed_projection"] = packed
    res["total_packed_projection"] = res["total"] - out["codes"] + packed
    return res


def format_size_report(report: dict[str, Any], *, tables: bool = False) -> str:
    """A small fixed-width table of ``size_report`` output (optionally one line per table)."""
    rows = [(name, c["params"], c["bytes"]) for name, c in report["components"].items()]
    if tables:
        rows += [(f"  {fqn} ({t['type']})", t["params"], t["bytes"]) for fqn, t in report["tables"].items()]
    rows.append(("total", report["total"]["params"], report["total"]["bytes"]))
    width = max(12, *(len(r[0]) for r in rows))
    lines = [f"{'component':<{width}} {'params':>14} {'bytes':>14} {'MB':>10}"]
    for name, params, nbytes_ in rows:
        lines.append(f"{name:<{width}} {params:>14,} {nbytes_:>14,} {nbytes_ / MB:>10.3f}")
    return "\n".join(lines)
