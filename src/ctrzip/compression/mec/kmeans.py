"""Batched, weighted k-means (Lloyd) in torch: one call clusters G groups at once.

Why batched: product quantization runs one k-means per sub-space; stacking the M
sub-spaces as groups ``[G, N, d]`` keeps it a handful of large matmuls on CPU or CUDA.
Why weighted: MEC's popularity weights r_j make frequent ids pull centroids harder
(paper eq. 11) without repeating rows in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

_CHUNK = 16384  # rows per distance block on CUDA: [G, chunk, K] floats stay small, few launches
_CPU_CHUNK = 2048  # on CPU a block that stays in cache: 1.5x faster (measured, G=4, K=256, d=4)


@dataclass
class KMeansResult:
    """Output of ``weighted_kmeans``.

    Attributes:
        centroids: ``[G, K, d]``.
        assign: ``[G, N]`` int64 index of the nearest centroid.
        objective: weighted sum of squared distances after each iteration (``[iters + 1]``,
            the first entry is for the initial centroids).
    """

    centroids: Tensor
    assign: Tensor
    objective: list[float]


def nearest(x: Tensor, centroids: Tensor, chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """Nearest centroid per row, by squared Euclidean distance, in row chunks.

    Args:
        x: ``[G, N, d]`` points.
        centroids: ``[G, K, d]``.
        chunk: rows per block (bounds memory at ``G * chunk * K`` floats; None = 2,048 on CPU,
            16,384 elsewhere). Each row's result does not depend on it.

    Returns:
        ``(assign [G, N] int64, sqdist [G, N])``.
    """
    if x.dim() != 3 or centroids.dim() != 3 or x.shape[0] != centroids.shape[0]:
        raise ValueError(
            f"expected x [G, N, d] and centroids [G, K, d], got {tuple(x.shape)}, {tuple(centroids.shape)}"
        )
    if chunk is None:
        chunk = _CPU_CHUNK if x.device.type == "cpu" else _CHUNK
    # ||c||^2 - 2 x.c as one matmul [x, 1] @ [-2c, ||c||^2]^T: the [G, n, K] block is written
    # once (baddbmm first copies the broadcast ||c||^2 into it); ||x||^2 does not move the argmin
    c_aug = torch.cat([-2 * centroids, centroids.pow(2).sum(-1, keepdim=True)], -1).transpose(1, 2)
    idx_parts, dist_parts = [], []
    for s in range(0, x.shape[1], chunk):
        xb = x[:, s : s + chunk]  # [G, n, d]
        part = torch.bmm(torch.cat([xb, xb.new_ones(*xb.shape[:-1], 1)], -1), c_aug)
        val, idx = part.min(dim=-1)
        idx_parts.append(idx)
        dist_parts.append((val + xb.pow(2).sum(-1)).clamp_min(0))
    return torch.cat(idx_parts, 1), torch.cat(dist_parts, 1)


def sample_by_weight(
    weights: Tensor, n: int, generator: torch.Generator | None = None, *, replacement: bool = True
) -> Tensor:
    """``n`` row indices drawn with probability proportional to ``weights``, for any row count.

    ``torch.multinomial`` refuses more than 2^24 categories (real Criteo fields reach 10M ids,
    industrial ones more), so: with replacement, inverse-CDF sampling (``searchsorted`` of
    uniform draws on the float64 cumulative weights); without replacement, the
    Efraimidis-Spirakis keys ``log(u) / w`` and their top ``n`` (equivalent to Gumbel top-k).
    Zero-weight rows are never drawn with replacement, and drawn last without it.

    Args:
        weights: ``[N]`` non-negative weights (any float dtype, any device) with a positive sum.
        n: number of draws (``<= N`` without replacement).
        generator: a ``torch.Generator`` on ``weights``' device (None = the global one).
        replacement: draw with replacement.

    Returns:
        ``[n]`` int64 indices on ``weights``' device.

    Raises:
        ValueError: ``weights`` is not 1-D, has a negative or non-finite entry, sums to 0, or
            ``n > N`` without replacement.
    """
    if weights.dim() != 1 or len(weights) == 0:
        raise ValueError(f"weights must be a non-empty 1-D tensor, got shape {tuple(weights.shape)}")
    w = weights.double()
    cdf = torch.cumsum(w, 0)  # NaN or inf anywhere reaches the total
    total = float(cdf[-1])
    if not math.isfinite(total) or float(w.min()) < 0:
        raise ValueError("weights must be finite and non-negative")
    if total <= 0:
        raise ValueError("weights sum to 0: nothing to sample")
    dev = w.device
    if replacement:
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=dev) * total
        return torch.searchsorted(cdf, u, right=True).clamp_(max=len(w) - 1)
    if n > len(w):
        raise ValueError(f"cannot draw {n} distinct rows out of {len(w)}")
    keys = torch.rand(len(w), generator=generator, dtype=torch.float64, device=dev).clamp_min_(1e-300)
    keys = keys.log_().div_(w + 1e-12)  # larger is better; zero weights sink to the bottom
    return keys.topk(n).indices


def _init_centroids(x: Tensor, w: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """Pick ``k`` rows per group with probability proportional to weight (distinct when possible)."""
    g, n, _ = x.shape
    rows = []
    for gi in range(g):
        probs = w[gi].double().cpu().clamp_min(0) + 1e-12
        if k <= n:
            idx = sample_by_weight(probs, k, gen, replacement=False)
        else:  # more centroids than points: every point once, then repeats
            extra = sample_by_weight(probs, k - n, gen, replacement=True)
            idx = torch.cat([torch.arange(n), extra])
        rows.append(x[gi, idx.to(x.device)])
    return torch.stack(rows)


def weighted_kmeans(
    x: Tensor,
    k: int,
    weights: Tensor | None = None,
    iters: int = 20,
    seed: int = 0,
    init: Tensor | None = None,
    tol: float = 0.0,
) -> KMeansResult:
    """Lloyd's k-means minimizing ``sum_j w_j ||x_j - c_{a(j)}||^2`` per group.

    Empty clusters are re-seeded with the point currently worst served (largest weighted
    distance), which never increases the objective.

    Args:
        x: ``[G, N, d]`` or ``[N, d]`` points (float).
        k: clusters per group.
        weights: ``[N]`` or ``[G, N]`` non-negative row weights (None = uniform).
        iters: maximum Lloyd iterations.
        seed: seeds the weighted random initialization.
        init: optional initial centroids ``[G, K, d]`` (skips random init).
        tol: stop when the relative objective improvement falls below this.

    Returns:
        ``KMeansResult`` (a 2-D input gives ``G = 1``).
    """
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"x must be [N, d] or [G, N, d], got {tuple(x.shape)}")
    if k < 1:
        raise ValueError("k must be >= 1")
    g, n, d = x.shape
    if n == 0:
        raise ValueError("k-means needs at least one point")
    x = x.float()
    if weights is None:
        w = torch.ones(g, n, device=x.device)
    else:
        w = weights.to(x.device, torch.float32)
        w = w.expand(g, n) if w.dim() == 1 else w
        if w.shape != (g, n) or bool((w < 0).any()):
            raise ValueError("weights must be non-negative with shape [N] or [G, N]")
    gen = torch.Generator().manual_seed(seed)
    cent = init.to(x.device, torch.float32).clone() if init is not None else _init_centroids(x, w, k, gen)
    if cent.shape != (g, k, d):
        raise ValueError(f"init must have shape {(g, k, d)}, got {tuple(cent.shape)}")
    assign, dist = nearest(x, cent)
    history = [float((w * dist).sum())]
    for _ in range(iters):
        sums = torch.zeros(g, k, d, device=x.device).scatter_add_(
            1, assign.unsqueeze(-1).expand(g, n, d), x * w.unsqueeze(-1)
        )
        mass = torch.zeros(g, k, device=x.device).scatter_add_(1, assign, w)
        new = torch.where(mass.unsqueeze(-1) > 0, sums / mass.clamp_min(1e-12).unsqueeze(-1), cent)
        empty = mass <= 0
        if bool(empty.any()):
            wd = w * dist
            for gi in range(g):
                slots = empty[gi].nonzero().flatten()
                worst = wd[gi].topk(min(len(slots), n)).indices
                new[gi, slots[: len(worst)]] = x[gi, worst]
        cent = new
        assign, dist = nearest(x, cent)
        history.append(float((w * dist).sum()))
        prev, cur = history[-2], history[-1]
        if tol > 0 and prev - cur <= tol * max(prev, 1e-30):
            break
    return KMeansResult(centroids=cent, assign=assign, objective=history)
