"""Code-quality diagnostics of a PQ code matrix, overall and by popularity band.

Why: plug-in AUC says *whether* codes are good; these say *why not* (dead codewords, low
perplexity, many ids collapsed onto one full code), and whether the head, torso or tail
suffers, which is what popularity weighting is meant to change.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor


def popularity_bands(
    counts: np.ndarray, head_frac: float = 0.01, tail_frac: float = 0.8
) -> dict[str, np.ndarray]:
    """Row indices of the head (top ``head_frac`` ids by count, at least one), the tail
    (bottom ``tail_frac``) and the torso (the rest). Ties are broken by id (stable sort)."""
    if not 0 < head_frac < 1 or not 0 <= tail_frac < 1 or head_frac + tail_frac > 1:
        raise ValueError("need 0 < head_frac < 1, 0 <= tail_frac < 1, head_frac + tail_frac <= 1")
    n = len(counts)
    order = np.argsort(-np.asarray(counts), kind="stable")
    n_head = max(1, int(math.ceil(head_frac * n))) if n else 0
    n_tail = min(n - n_head, int(math.floor(tail_frac * n)))
    return {
        "head": order[:n_head],
        "torso": order[n_head : n - n_tail],
        "tail": order[n - n_tail :],
    }


def _stats(codes: np.ndarray, shared: np.ndarray, k: int) -> dict[str, Any]:
    """Usage fraction and perplexity per sub-space, and the collision rate, of one band."""
    if len(codes) == 0:
        return {"ids": 0, "usage": [], "perplexity": [], "collision_rate": 0.0}
    usage, ppl = [], []
    for m in range(codes.shape[1]):
        hist = np.bincount(codes[:, m], minlength=k).astype(np.float64)
        usage.append(float((hist > 0).sum() / k))
        p = hist[hist > 0] / hist.sum()
        ppl.append(float(np.exp(-(p * np.log(p)).sum())))
    return {
        "ids": int(len(codes)),
        "usage": usage,
        "perplexity": ppl,
        "collision_rate": float(shared.mean()),
    }


def code_diagnostics(
    codes: Tensor | np.ndarray,
    counts: Tensor | np.ndarray,
    codebook_size: int,
    head_frac: float = 0.01,
    tail_frac: float = 0.8,
) -> dict[str, Any]:
    """Diagnostics of ``codes [N, M]`` for ``N`` ids with training ``counts [N]``.

    For ``all`` and each band: ``usage`` (fraction of the K codewords used, per sub-space),
    ``perplexity`` (exp of the code-usage entropy over the band's ids, per sub-space) and
    ``collision_rate`` (fraction of the band's ids whose full M-code equals that of another
    id anywhere in the table).
    """
    c = codes.cpu().numpy() if isinstance(codes, Tensor) else np.asarray(codes)
    n_arr = counts.cpu().numpy() if isinstance(counts, Tensor) else np.asarray(counts)
    c = c.astype(np.int64)
    if c.ndim != 2 or len(c) != len(n_arr):
        raise ValueError(f"codes must be [N, M] with N = len(counts), got {c.shape} and {len(n_arr)}")
    if len(c):
        _, inverse, mult = np.unique(c, axis=0, return_inverse=True, return_counts=True)
        shared = mult[inverse.reshape(-1)] > 1
    else:
        shared = np.zeros(0, dtype=bool)
    out: dict[str, Any] = {"all": _stats(c, shared, codebook_size)}
    out["distinct_codes"] = int(len(np.unique(c, axis=0))) if len(c) else 0
    for name, idx in popularity_bands(n_arr, head_frac, tail_frac).items():
        out[name] = _stats(c[idx], shared[idx], codebook_size)
    return out


def summarize(diag: dict[str, Any]) -> dict[str, float]:
    """One-line view: mean usage / perplexity per band and collision rates."""
    out: dict[str, float] = {}
    for band in ("all", "head", "torso", "tail"):
        d = diag[band]
        if d["ids"]:
            out[f"{band}_usage"] = float(np.mean(d["usage"]))
            out[f"{band}_perplexity"] = float(np.mean(d["perplexity"]))
            out[f"{band}_collision"] = d["collision_rate"]
    return out


def as_tensor_counts(counts: np.ndarray | Tensor | None, n: int) -> Tensor:
    """Counts as a float tensor of length ``n`` (zeros when the dataset has none)."""
    if counts is None:
        return torch.zeros(n)
    t = torch.as_tensor(np.asarray(counts, dtype=np.float64) if not isinstance(counts, Tensor) else counts)
    if len(t) != n:
        raise ValueError(f"counts have {len(t)} entries, expected {n}")
    return t.double()


BAND_NAMES = ("head", "torso", "tail")


def band_sums(
    codes: Tensor | np.ndarray,
    counts: Tensor | np.ndarray,
    dense_rows: Tensor | np.ndarray,
    recon_rows: Tensor | np.ndarray,
    codebook_size: int,
    band_of: np.ndarray,
) -> dict[str, dict[str, float]]:
    """Per popularity band, what pools across tables: one code unit (a PQ table, or one PQ
    band of a banded table) of ``N`` ids.

    Args:
        codes: ``[N, M]`` integer codes of the unit's ids.
        counts: ``[N]`` training counts of those ids (the weights).
        dense_rows: ``[N, D]`` the dense model's rows of those ids (the reference ``e``).
        recon_rows: ``[N, D]`` the compressed model's rows of those ids (``ê``).
        codebook_size: K.
        band_of: ``[N]`` band name of each id (``head``, ``torso`` or ``tail``).

    Returns:
        ``band -> {ids, count, usage, perplexity, collision_rate, err, norm}``: ``usage`` and
        ``perplexity`` are means over the M sub-spaces of the band's ids (see
        ``code_diagnostics``), ``collision_rate`` the fraction of the band's ids whose full
        code another id of the unit shares, ``err = sum n ||e - ê||^2`` and
        ``norm = sum n ||e||^2`` over the band's ids (``n``: count). Bands without ids are
        absent.
    """
    c = (codes.cpu().numpy() if isinstance(codes, Tensor) else np.asarray(codes)).astype(np.int64)
    n = counts.cpu().numpy() if isinstance(counts, Tensor) else np.asarray(counts)
    e = dense_rows.detach().cpu().numpy() if isinstance(dense_rows, Tensor) else np.asarray(dense_rows)
    r = recon_rows.detach().cpu().numpy() if isinstance(recon_rows, Tensor) else np.asarray(recon_rows)
    n, e, r = n.astype(np.float64), e.astype(np.float64), r.astype(np.float64)
    if c.ndim != 2 or not len(c) == len(n) == len(e) == len(r) == len(band_of) or e.shape != r.shape:
        raise ValueError(
            f"band_sums: codes [N, M], counts [N], rows [N, D] and band_of [N] must agree, got "
            f"{c.shape}, {n.shape}, {e.shape}, {r.shape}, {np.shape(band_of)}"
        )
    if len(c):
        _, inverse, mult = np.unique(c, axis=0, return_inverse=True, return_counts=True)
        shared = mult[inverse.reshape(-1)] > 1
    else:
        shared = np.zeros(0, dtype=bool)
    sq_err = ((e - r) ** 2).sum(1)
    sq_norm = (e**2).sum(1)
    out: dict[str, dict[str, float]] = {}
    for band in BAND_NAMES:
        sel = np.asarray(band_of) == band
        if not sel.any():
            continue
        st = _stats(c[sel], shared[sel], codebook_size)
        out[band] = {
            "ids": int(sel.sum()),
            "count": float(n[sel].sum()),
            "usage": float(np.mean(st["usage"])),
            "perplexity": float(np.mean(st["perplexity"])),
            "collision_rate": st["collision_rate"],
            "err": float((n[sel] * sq_err[sel]).sum()),
            "norm": float((n[sel] * sq_norm[sel]).sum()),
        }
    return out


def pool_band_sums(units: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Pool ``band_sums`` of several units (fields) per band, count-weighted.

    ``usage``, ``perplexity`` and ``collision_rate``: means over the units weighted by the
    band's training count in each; ``rel_error = sum err / sum norm`` (the count-weighted
    ``||e - ê||^2 / ||e||^2``; None when the band's rows are all zero or unseen); ``ids``
    and ``count`` summed. ``all`` pools the three bands' ``rel_error``, ``ids`` and ``count``
    (a band-weighted usage would not be the usage of all ids, so it has none).
    """
    out: dict[str, dict[str, float]] = {}
    for band in (*BAND_NAMES, "all"):
        parts = [u[b] for u in units for b in (BAND_NAMES if band == "all" else (band,)) if b in u]
        if not parts:
            continue
        count = sum(p["count"] for p in parts)
        agg: dict[str, Any] = {"ids": int(sum(p["ids"] for p in parts)), "count": count}
        for key in ("usage", "perplexity", "collision_rate") if band != "all" else ():
            agg[key] = sum(p[key] * p["count"] for p in parts) / count if count > 0 else None
        norm = sum(p["norm"] for p in parts)
        agg["rel_error"] = sum(p["err"] for p in parts) / norm if norm > 0 else None
        out[band] = agg
    return out
