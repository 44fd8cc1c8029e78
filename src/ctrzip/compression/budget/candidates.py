"""Candidate representations of one target, with exact bytes and reconstruction error.

A ``Candidate`` knows how to build its module, how many bytes that module stores (read off
the built module, so the allocator's arithmetic is the saved artifact's) and, for tables,
its count-weighted relative reconstruction error over the field's real ids
``sum_i c_i ||x_i - x^_i||^2 / sum_i c_i ||x_i||^2`` (ids weighted by training frequency,
i.e. by how often a lookup meets them). Tables: float (kept), row-wise fp16/int8/int4/int2,
and product quantization fitted by count-weighted k-means (the MEC paper's weighted-k-means
baseline; Jegou et al. 2011 for PQ) at several (M, K).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctrzip.compression.mec.kmeans import weighted_kmeans
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.pq import PQFit, PQTable
from ctrzip.nn.embedding.rowwise import RowwiseQuantTable
from ctrzip.nn.int8_linear import Int8Linear


@dataclass
class Candidate:
    """One representation of a target.

    Attributes:
        name: short label (``float``, ``int4``, ``pq M=4 K=256``).
        nbytes: bytes the built module stores (exact).
        error: count-weighted relative reconstruction error (0 for the original).
        build: returns the module to swap in (None: keep the current module).
    """

    name: str
    nbytes: int
    error: float
    build: Callable[[], nn.Module] | None


def weighted_error(ref: Tensor, approx: Tensor, counts: Tensor) -> float:
    """``sum_i c_i ||ref_i - approx_i||^2 / sum_i c_i ||ref_i||^2`` over rows ``1 .. V-2``."""
    r, a, c = ref[1:-1].float(), approx[1:-1].float(), counts[1:-1].float()
    num = (c * (r - a).pow(2).sum(1)).sum()
    den = (c * r.pow(2).sum(1)).sum().clamp_min(1e-30)
    return float(num / den)


def _fit_pq(weight: Tensor, counts: Tensor, m: int, k: int, seed: int) -> PQFit:
    """Count-weighted k-means per subspace over the real ids; special rows get code 0."""
    v, d = weight.shape
    real = weight[1:-1].float()  # [N, D]
    x = real.reshape(real.shape[0], m, d // m).transpose(0, 1).contiguous()  # [M, N, D/M]
    w = counts[1:-1].float().clamp_min(1e-3)  # unseen ids still get a codeword
    res = weighted_kmeans(x, k, w, iters=15, seed=seed)
    codes = torch.zeros(v, m, dtype=torch.long, device=weight.device)
    codes[1:-1] = res.assign.T
    return PQFit(codes, res.centroids.to(weight.dtype))


def table_candidates(
    table: EmbeddingTable,
    counts: Tensor,
    *,
    bits: Sequence[int] = (16, 8, 4, 2),
    pq: Sequence[tuple[int, int]] = (),
    seed: int = 0,
) -> list[Candidate]:
    """The float table plus its row-wise and PQ forms that are smaller than it.

    Args:
        table: the current (float) table ``[V, D]``.
        counts: ``[V]`` training frequency of each id.
        bits: row-wise widths to offer.
        pq: ``(M, K)`` settings to offer (M must divide D, K < number of real ids).
        seed: k-means seed.
    """
    weight = table.materialize()
    counts = counts.to(weight.device)
    pad = getattr(table, "padding_idx", 0)
    out = [Candidate("float", table.nbytes(), 0.0, None)]

    def add(name: str, make: Callable[[], nn.Module]) -> None:
        mod = make()
        nbytes = mod.nbytes()  # type: ignore[operator]
        if nbytes < out[0].nbytes:
            out.append(Candidate(name, nbytes, weighted_error(weight, mod.materialize(), counts), make))  # type: ignore[operator]

    for b in bits:
        add("fp16" if b == 16 else f"int{b}", lambda b=b: RowwiseQuantTable.from_dense(weight, b, pad, True))
    v, d = weight.shape
    for m, k in pq:
        if d % m == 0 and k < v - 2:
            fit = _fit_pq(weight, counts, m, k, seed)
            add(f"pq M={m} K={k}", lambda fit=fit: PQTable.from_dense(table, fit))
    return out


def linear_candidates(linear: nn.Linear) -> list[Candidate]:
    """A Linear kept in float32 or stored as int8 weights (error: relative weight error)."""
    keep = 4 * sum(p.numel() for p in linear.parameters())
    q = Int8Linear.from_linear(linear)
    nbytes = sum(t.numel() * t.element_size() for t in (*q.buffers(), *q.parameters()))
    w = linear.weight.detach().float()
    err = float((q.weight - w).pow(2).sum() / w.pow(2).sum().clamp_min(1e-30))
    out = [Candidate("float", keep, 0.0, None)]
    if nbytes < keep:
        out.append(Candidate("int8", nbytes, err, lambda: Int8Linear.from_linear(linear)))
    return out
