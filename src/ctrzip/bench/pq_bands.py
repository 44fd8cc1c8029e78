"""Code usage and reconstruction error by popularity band of a compressed model's PQ codes.

Why: a plug-in AUC says whether PQ codes are good; per band (head/torso/tail of the
training counts) the code usage, perplexity and the count-weighted relative reconstruction
error ``sum n ||e - ê||^2 / sum n ||e||^2`` against the dense model say where they are not,
which is what popularity weighting (MEC) is meant to change. One code path for every
PQ-producing method: ``PQTable`` (weighted k-means, basic/freq PQ, MEC) and the ``pq``
bands of a ``BandedTable`` (the budget method).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ctrzip.compression.mec.diagnostics import band_sums, pool_band_sums, popularity_bands

HEAD_FRAC = 0.01  # the MEC diagnostics' defaults (spec: top 1% head, bottom 80% tail)
TAIL_FRAC = 0.8


def _band_names(counts: np.ndarray, padding: int | None, oov: int) -> np.ndarray:
    """``[V]`` band name per id of a field; padding and OOV (not quantized) are ``""``."""
    v = len(counts)
    real = np.array([i for i in (padding, oov) if i is not None and 0 <= i < v], dtype=np.int64)
    ids = np.setdiff1d(np.arange(v), real)
    names = np.full(v, "", dtype=object)
    for name, idx in popularity_bands(counts[ids], HEAD_FRAC, TAIL_FRAC).items():
        names[ids[idx]] = name
    return names


def _units(table: Any) -> list[tuple[np.ndarray, torch.Tensor, int]]:
    """``(ids [N], codes [N, M], K)`` of each code unit of a table (none if it has no codes);
    a ``PQTable``'s densely served ids (OOV) are not among its ids."""
    from ctrzip.nn.embedding.banded import BandedTable
    from ctrzip.nn.embedding.bands.pq import PQBand
    from ctrzip.nn.embedding.pq import PQTable

    if isinstance(table, PQTable):
        ids = np.setdiff1d(np.arange(table.num_embeddings), np.array(table.dense_ids, dtype=np.int64))
        return [(ids, table.codes.cpu()[torch.as_tensor(ids)], table.codebook_size)]
    if isinstance(table, BandedTable):
        return [
            (np.arange(spec.start, spec.end), band.codes.cpu(), band.codebook_size)
            for band, spec in zip(table.bands, table.plan, strict=True)
            if isinstance(band, PQBand)
        ]
    return []


def pq_band_diagnostics(model: Any, dense: Any, counts: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """Per popularity band, pooled over every field with PQ codes in ``model.embedding``.

    Bands are those of ``diagnostics.popularity_bands`` over a field's ids other than padding
    (id 0) and OOV (its last id), which are never quantized: head = top 1% by training
    count, tail = bottom 80%, torso = the rest. Per field and band the stats of
    ``diagnostics.band_sums`` (the dense model's rows are ``e``, the compressed model's
    ``ê``); fields are pooled count-weighted (``diagnostics.pool_band_sums``).

    Args:
        model: the compressed model (``model.embedding`` a ``FieldEmbedding``).
        dense: the dense model it was compressed from (same fields and vocabularies).
        counts: field -> ``[V]`` training counts (``EncodedDataset.counts``).

    Returns:
        None when no table has PQ codes; else ``{"head_frac", "tail_frac", "weighting":
        "count", "fields": [names], "bands": {band: {ids, count, usage, perplexity,
        collision_rate, rel_error}}}`` (``all`` has ids, count and rel_error only), and
        ``"fields_without_counts"`` listing PQ fields left out because the data had no counts.
    """
    tables = getattr(getattr(model, "embedding", None), "tables", None)
    if tables is None:
        return None
    units, fields, uncounted = [], [], []
    for name, table in tables.items():
        found = _units(table)
        if not found:
            continue
        if name not in counts:
            uncounted.append(name)
            continue
        n = np.asarray(counts[name], dtype=np.float64)
        padding = getattr(table, "padding_idx", 0)
        names = _band_names(n, padding, len(n) - 1)
        with torch.no_grad():
            e = dense.embedding.tables[name].materialize().float().cpu()
            r = table.materialize().float().cpu()
        for ids, codes, k in found:
            sel = names[ids] != ""  # the unit's quantized ids (not padding, not OOV)
            keep = ids[sel]
            units.append(band_sums(codes[torch.as_tensor(sel)], n[keep], e[keep], r[keep], k, names[keep]))
        fields.append(name)
    if not fields and not uncounted:
        return None
    out: dict[str, Any] = {
        "head_frac": HEAD_FRAC,
        "tail_frac": TAIL_FRAC,
        "weighting": "count",
        "fields": fields,
        "bands": pool_band_sums(units),
    }
    if uncounted:
        out["fields_without_counts"] = uncounted
    return out
