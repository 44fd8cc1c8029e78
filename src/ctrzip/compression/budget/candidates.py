"""Candidate representations of one target, with exact bytes and reconstruction error.

A ``Candidate`` knows how to build its module, how many bytes that module stores (read off
the built module, so the allocator's arithmetic is the saved artifact's) and, for tables,
its count-weighted relative reconstruction error over the field's real ids
``sum_i c_i ||x_i - x^_i||^2 / sum_i c_i ||x_i||^2`` (ids weighted by training frequency,
i.e. by how often a lookup meets them). Tables: float (kept), row-wise fp16/int8/int4/int2,
product quantization fitted by count-weighted k-means (the MEC paper's weighted-k-means
baseline; Jegou et al. 2011 for PQ) at several (M, K), and mixed-precision popularity bands
(``BandedTable``: the head ids that serve most lookups at row-wise precision, the tail as PQ
or one shared vector).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctrzip.compression.mec.kmeans import weighted_kmeans
from ctrzip.distributed import broadcast_module_
from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.banded import BandedTable
from ctrzip.nn.embedding.bands import BandSpec, validate_plan
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.pq import PQFit, PQTable
from ctrzip.nn.embedding.rowwise import RowwiseQuantTable


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
    res = weighted_kmeans(x, k, w, iters=KMEANS_ITERS, seed=seed)
    codes = torch.zeros(v, m, dtype=torch.long, device=weight.device)
    codes[1:-1] = res.assign.T
    return PQFit(codes, res.centroids.to(weight.dtype))


def table_candidates(
    table: EmbeddingTable,
    counts: Tensor,
    *,
    bits: Sequence[int] = (16, 8, 4, 2),
    pq: Sequence[tuple[int, int]] = (),
    bands: Sequence[float] = (),
    seed: int = 0,
) -> list[Candidate]:
    """The float table plus its row-wise and PQ forms that are smaller than it.

    Args:
        table: the current (float) table ``[V, D]``.
        counts: ``[V]`` training frequency of each id.
        bits: row-wise widths to offer.
        pq: ``(M, K)`` settings to offer (M must divide D, K < number of real ids).
        bands: head shares of lookups for the popularity-banded candidates (``BAND_PAIRS``).
        seed: k-means seed.
    """
    weight = table.materialize()
    counts = counts.to(weight.device)
    pad = getattr(table, "padding_idx", 0)
    out = [Candidate("float", table.nbytes(), 0.0, None)]

    def add(name: str, make: Callable[[], nn.Module], fitted: bool = False) -> None:
        mod = make()
        if fitted:  # k-means: every rank fitted it; all keep rank 0's (CUDA scatter-adds vary)
            broadcast_module_(mod)
        nbytes = mod.nbytes()  # type: ignore[operator]
        if nbytes < out[0].nbytes:  # built once: calibration and the final swap reuse it
            err = weighted_error(weight, mod.materialize(), counts)  # type: ignore[operator]
            out.append(Candidate(name, nbytes, err, lambda mod=mod: mod))

    for b in bits:
        add("fp16" if b == 16 else f"int{b}", lambda b=b: RowwiseQuantTable.from_dense(weight, b, pad, True))
    v, d = weight.shape
    for m, k in pq:
        if d % m == 0 and k < v - 2:
            fit = _fit_pq(weight, counts, m, k, seed)
            add(f"pq M={m} K={k}", lambda fit=fit: PQTable.from_dense(table, fit), fitted=True)
    for share in bands:
        for name, plan in band_plans(v, counts, share):
            try:
                validate_plan(plan, v, d, name)
            except CompressionError:
                continue  # e.g. a tail smaller than its codebook: not a candidate here
            add(name, lambda plan=plan: BandedTable.from_dense(weight, counts, plan, pad), fitted=True)
    return out


def head_size(counts: Tensor, share: float) -> int:
    """Ids ``1 .. h-1`` serve ``share`` of the real ids' lookups (ids sorted by frequency); h >= 2."""
    real = counts[1:-1].double().clamp_min(0)
    total = float(real.sum())
    if total <= 0:
        return 2
    reach = int(torch.searchsorted(real.cumsum(0), torch.tensor(share * total, dtype=torch.float64)))
    return min(max(reach + 2, 2), counts.numel() - 1)


# (head representation, tail representation) of the banded candidates; the head serves
# ``head_share`` of lookups, the OOV row stays float (it stands for every unseen id)
BAND_PAIRS: tuple[tuple[tuple[str, dict], tuple[str, dict]], ...] = (
    (("rowwise", {"bits": 8}), ("pq", {"M": 2, "K": 256})),
    (("rowwise", {"bits": 8}), ("pq", {"M": 1, "K": 256})),
    (("rowwise", {"bits": 4}), ("pq", {"M": 1, "K": 16})),
    (("rowwise", {"bits": 8}), ("shared", {"S": 1})),
)


# three-band layouts: head (``head_share`` of lookups), mid (up to ``TAIL_SHARE``), and the
# deepest tail (ids serving the last 1% of lookups: most of a big field's ids) on one shared
# vector; the MEC/DLRM observation that rare ids carry little individual signal
BAND_TRIPLES: tuple[tuple[tuple[str, dict], ...], ...] = (
    (("rowwise", {"bits": 8}), ("pq", {"M": 1, "K": 256}), ("shared", {"S": 1})),
    (("rowwise", {"bits": 4}), ("pq", {"M": 1, "K": 16}), ("shared", {"S": 1})),
)
TAIL_SHARE = 0.99


# Lloyd iterations of every candidate's k-means: the count-weighted objective has settled by
# then on embedding tables, and k-means fits are most of the search's own time
KMEANS_ITERS = 8


def _pq_iters(spec: tuple[str, dict]) -> dict:
    rep, params = spec
    return {**params, "iters": KMEANS_ITERS} if rep == "pq" else params


def _label(bands: tuple[tuple[str, dict], ...]) -> str:
    return "+".join(f"{r}{''.join(f'{k}{x}' for k, x in p.items())}" for r, p in bands)


def band_plans(v: int, counts: Tensor, head_share: float) -> list[tuple[str, list[BandSpec]]]:
    """Banded plans by popularity (ids sorted by frequency), each ending in a float OOV row:
    two bands (``BAND_PAIRS``, named ``bands@S head+tail``) and, where the ids past
    ``TAIL_SHARE`` of lookups form a band of their own, three (``BAND_TRIPLES``,
    ``bands@S/0.99 head+mid+tail``)."""
    h = head_size(counts, head_share)
    if h >= v - 1:
        return []
    out = []
    for pair in BAND_PAIRS:
        (hr, hp), (tr, tp) = pair
        plan = [
            BandSpec(0, h, hr, hp),
            BandSpec(h, v - 1, tr, _pq_iters(pair[1])),
            BandSpec(v - 1, v, "float"),
        ]
        out.append((f"bands@{head_share:g} {_label(pair)}", plan))
    t = head_size(counts, TAIL_SHARE)
    if h < t < v - 1:
        for triple in BAND_TRIPLES:
            (hr, hp), (mr, mp), (tr, tp) = triple
            plan = [
                BandSpec(0, h, hr, hp),
                BandSpec(h, t, mr, _pq_iters(triple[1])),
                BandSpec(t, v - 1, tr, tp),
            ]
            plan.append(BandSpec(v - 1, v, "float"))
            out.append((f"bands@{head_share:g}/{TAIL_SHARE:g} {_label(triple)}", plan))
    return out


def codebook_candidate(
    table: EmbeddingTable, counts: Tensor, bits: int = 4, seed: int = 0
) -> Candidate | None:
    """Every row but the OOV one as a code into ``2**bits`` shared vectors (one PQ band, M=1,
    count-weighted k-means; codes bit-packed), the OOV row float: for the width-1 first-order
    tables, where row-wise scales would cost more than the values. None when it does not fit
    or is not smaller than fp16 rows."""
    weight = table.materialize()
    v, d = weight.shape
    pq = {"M": 1, "K": 2**bits, "iters": KMEANS_ITERS, "seed": seed}
    plan = [BandSpec(0, v - 1, "pq", pq), BandSpec(v - 1, v, "float")]
    try:
        validate_plan(plan, v, d, "first-order codebook")
    except CompressionError:
        return None
    pad = getattr(table, "padding_idx", 0)
    mod = broadcast_module_(BandedTable.from_dense(weight, counts.to(weight.device), plan, pad))
    if mod.nbytes() >= table.nbytes() // 2:  # not even smaller than fp16 rows: no use
        return None
    err = weighted_error(weight, mod.materialize(), counts.to(weight.device))
    return Candidate(f"codebook{bits}", mod.nbytes(), err, lambda: mod)
