"""PQ code diagnostics by popularity band (``bench.pq_bands``) against an independent numpy
computation on tiny tables: a ``PQTable`` field, a ``BandedTable`` with a PQ band, pooling
over fields, and what is left out."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ctrzip.bench.pq_bands import pq_band_diagnostics
from ctrzip.nn.embedding.banded import BandedTable
from ctrzip.nn.embedding.bands import BandSpec
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.pq import PQTable


def _dense(w: torch.Tensor) -> DenseTable:
    t = DenseTable(*w.shape)
    with torch.no_grad():
        t.weight.copy_(w)
    return t


def _model(tables: dict) -> SimpleNamespace:
    return SimpleNamespace(embedding=SimpleNamespace(tables=tables))


def _bands_np(counts: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    """head = ceil(1%) most counted (at least 1), tail = floor(80%) least, ties by id."""
    order = ids[np.lexsort((ids, -counts[ids]))]
    n = len(ids)
    n_head = max(1, math.ceil(0.01 * n))
    n_tail = min(n - n_head, math.floor(0.8 * n))
    return {"head": order[:n_head], "torso": order[n_head : n - n_tail], "tail": order[n - n_tail :]}


def _unit_np(codes: np.ndarray, k: int, n: np.ndarray, e: np.ndarray, r: np.ndarray) -> dict:
    """Stats of one band of one code unit, written out directly."""
    usage, ppl = [], []
    for m in range(codes.shape[1]):
        used = sorted(set(codes[:, m].tolist()))
        usage.append(len(used) / k)
        p = np.array([np.sum(codes[:, m] == c) for c in used], dtype=float) / len(codes)
        ppl.append(math.exp(-sum(q * math.log(q) for q in p)))
    return {
        "count": n.sum(),
        "usage": np.mean(usage),
        "perplexity": np.mean(ppl),
        "err": sum(n[i] * np.sum((e[i] - r[i]) ** 2) for i in range(len(n))),
        "norm": sum(n[i] * np.sum(e[i] ** 2) for i in range(len(n))),
    }


def _collided(codes: np.ndarray) -> np.ndarray:
    rows = [tuple(c) for c in codes.tolist()]
    return np.array([rows.count(c) > 1 for c in rows])


def test_pq_table_fields_pooled_count_weighted_match_numpy() -> None:
    rng = np.random.default_rng(3)
    fields = {}
    expected_parts: dict[str, list[dict]] = {"head": [], "torso": [], "tail": []}
    for name, v, m, k in (("a", 260, 2, 8), ("b", 130, 4, 4)):
        d = 8
        w = torch.as_tensor(rng.normal(size=(v, d)), dtype=torch.float32)
        codes = torch.as_tensor(rng.integers(0, k, size=(v, m)))
        books = torch.as_tensor(rng.normal(size=(m, k, d // m)), dtype=torch.float32)
        pq = PQTable.from_codebooks(codes, books, dense_rows=w[v - 1 :], dense_ids=[v - 1])
        counts = rng.integers(0, 50, size=v)
        fields[name] = (pq, _dense(w), counts)
        # independent reconstruction: concat of each sub-space's codeword
        c = codes.numpy()
        recon = np.concatenate([books.numpy()[j][c[:, j]] for j in range(m)], axis=1)
        ids = np.arange(1, v - 1)  # padding (0) and OOV (v - 1) are not quantized
        for band, idx in _bands_np(counts, ids).items():
            part = _unit_np(c[idx], k, counts[idx].astype(float), w.numpy()[idx], recon[idx])
            part["collision"] = _collided(c[ids])[np.searchsorted(ids, idx)].mean()
            part["ids"] = len(idx)
            expected_parts[band].append(part)
    model = _model({n: f[0] for n, f in fields.items()} | {"plain": _dense(torch.ones(5, 8))})
    dense = _model({n: f[1] for n, f in fields.items()})
    got = pq_band_diagnostics(model, dense, {n: f[2] for n, f in fields.items()})
    assert got is not None
    assert got["fields"] == ["a", "b"] and got["weighting"] == "count"
    for band, parts in expected_parts.items():
        g = got["bands"][band]
        tot = sum(p["count"] for p in parts)
        assert g["ids"] == sum(p["ids"] for p in parts)
        assert g["count"] == pytest.approx(tot)
        assert g["rel_error"] == pytest.approx(sum(p["err"] for p in parts) / sum(p["norm"] for p in parts))
        for key, ekey in (("usage", "usage"), ("perplexity", "perplexity"), ("collision_rate", "collision")):
            assert g[key] == pytest.approx(sum(p[ekey] * p["count"] for p in parts) / tot)
    all_parts = [p for parts in expected_parts.values() for p in parts]
    assert got["bands"]["all"]["rel_error"] == pytest.approx(
        sum(p["err"] for p in all_parts) / sum(p["norm"] for p in all_parts)
    )
    assert "usage" not in got["bands"]["all"]


def test_banded_table_counts_only_its_pq_band() -> None:
    rng = np.random.default_rng(5)
    v, d = 400, 8
    w = torch.as_tensor(rng.normal(size=(v, d)), dtype=torch.float32)
    counts = np.sort(rng.integers(1, 1000, size=v))[::-1].copy()
    pq = BandSpec(60, v - 1, "pq", {"M": 2, "K": 16})
    plan = [BandSpec(0, 60, "float"), pq, BandSpec(v - 1, v, "float")]
    table = BandedTable.from_dense(w, torch.as_tensor(counts), plan, 0)
    got = pq_band_diagnostics(_model({"f": table}), _model({"f": _dense(w)}), {"f": counts})
    assert got is not None
    bands = _bands_np(counts, np.arange(1, v - 1))
    recon = table.materialize().numpy()
    codes = table.bands[1].codes.numpy().astype(np.int64)  # rows 60 .. v-2
    for band, idx in bands.items():
        idx = idx[idx >= 60]  # only the PQ band's ids
        if not len(idx):
            assert band not in got["bands"]
            continue
        e = _unit_np(codes[idx - 60], 16, counts[idx].astype(float), w.numpy()[idx], recon[idx])
        assert got["bands"][band]["ids"] == len(idx)
        assert got["bands"][band]["rel_error"] == pytest.approx(e["err"] / e["norm"])
        assert got["bands"][band]["usage"] == pytest.approx(e["usage"])
        assert got["bands"][band]["perplexity"] == pytest.approx(e["perplexity"])
    assert "head" not in got["bands"]  # the head (4 ids, all < 60) is served by float rows


def test_no_pq_codes_gives_none_and_uncounted_fields_are_named() -> None:
    w = torch.randn(50, 4)
    assert pq_band_diagnostics(_model({"f": _dense(w)}), _model({"f": _dense(w)}), {}) is None
    codes = torch.randint(0, 4, (50, 2))
    pq = PQTable.from_codebooks(codes, torch.randn(2, 4, 2))
    got = pq_band_diagnostics(_model({"f": pq}), _model({"f": _dense(w)}), {})
    assert got is not None and got["fields_without_counts"] == ["f"] and got["bands"] == {}
