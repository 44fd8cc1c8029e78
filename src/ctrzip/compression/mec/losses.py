"""The pieces of MEC's stage-1 objective, as small pure functions (Yu et al., DASFAA 2025).

Each one fixes a defect of the public reference code (see spec/reference-code-notes.md, A.5):
the regularizer here has a gradient, negatives change ~rho*M positions instead of being
fully random, and the quantizer is exposed for PQ, residual (RQ) and additive (AQ) codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Weighting = Literal["log2", "count", "none"]
Quantizer = Literal["pq", "rq", "aq"]


def popularity_weights(counts: Tensor | np.ndarray, weighting: Weighting = "log2") -> Tensor:
    """Row weights from training counts: ``max(1, floor(log2 n))`` (paper eq. 11), ``n`` or 1.

    ``count`` weighting floors at 1 too, so unseen ids still get a (tiny) share.
    """
    n = torch.as_tensor(np.asarray(counts) if isinstance(counts, np.ndarray) else counts).double()
    if weighting == "log2":
        return torch.floor(torch.log2(n.clamp_min(1))).clamp_min(1).float()
    if weighting == "count":
        return n.clamp_min(1).float()
    if weighting == "none":
        return torch.ones_like(n, dtype=torch.float32)
    raise ValueError(f"unknown weighting {weighting!r} (log2, count, none)")


def sq_dist(s: Tensor, books: Tensor) -> Tensor:
    """Squared distances of sub-vectors to every codeword.

    Args:
        s: ``[B, M, W]`` (one target per sub-space).
        books: ``[M, K, W]``.

    Returns:
        ``[B, M, K]``.
    """
    cross = torch.einsum("bmw,mkw->bmk", s, books)
    return s.pow(2).sum(-1, keepdim=True) - 2 * cross + books.pow(2).sum(-1)


def gather_codewords(codes: Tensor, books: Tensor) -> Tensor:
    """``books[m, codes[..., m]]`` for every m -> ``[..., M, W]``, via ``F.embedding``.

    (Backprop through advanced indexing ``books[codes]`` is very slow on CUDA.)
    """
    m, k, w = books.shape
    offsets = torch.arange(m, device=codes.device) * k
    return F.embedding(codes.long() + offsets, books.reshape(m * k, w))


@dataclass
class Quantized:
    """Result of assigning a batch to codewords.

    Attributes:
        codes: ``[B, M]`` int64.
        q: ``[B, D]`` quantized vector (gradient flows to the codebooks).
        dist: ``[B, M, K]`` squared distances each sub-space's target had to its codewords
            (for soft assignments).
        targets: ``[B, M, W]`` what each stage quantized (chunk for PQ, residual for RQ/AQ).
    """

    codes: Tensor
    q: Tensor
    dist: Tensor
    targets: Tensor


def quantize(s: Tensor, books: Tensor, kind: Quantizer = "pq", icm_iters: int = 2) -> Quantized:
    """Assign ``s [B, D]`` to codes.

    * ``pq``: split ``s`` into M chunks, nearest codeword per chunk (paper eqs. 5-6).
    * ``rq``: M stages over the full vector, each quantizing the previous stage's residual.
    * ``aq``: M full-width codebooks whose selected words are summed; start from the RQ
      (greedy) codes, then ``icm_iters`` sweeps re-pick each code given the others.

    Args:
        s: ``[B, D]`` vectors.
        books: ``[M, K, D/M]`` for ``pq``, ``[M, K, D]`` for ``rq``/``aq``.
        kind: quantizer.
        icm_iters: AQ refinement sweeps.
    """
    b, d = s.shape
    m, k, w = books.shape
    if kind == "pq":
        if m * w != d:
            raise ValueError(f"pq codebooks {tuple(books.shape)} do not tile D={d}")
        target = s.reshape(b, m, w)
        dist = sq_dist(target, books)
        codes = dist.argmin(-1)
        q = gather_codewords(codes, books).reshape(b, d)
        return Quantized(codes, q, dist, target)
    if kind not in ("rq", "aq"):
        raise ValueError(f"unknown quantizer {kind!r} (pq, rq, aq)")
    if w != d:
        raise ValueError(f"{kind} codebooks must be full width D={d}, got {tuple(books.shape)}")
    with torch.no_grad():
        codes = torch.zeros(b, m, dtype=torch.long, device=s.device)
        res = s.detach()
        for i in range(m):
            codes[:, i] = sq_dist(res.unsqueeze(1), books[i : i + 1]).squeeze(1).argmin(-1)
            res = res - books[i, codes[:, i]]
        for _ in range(icm_iters if kind == "aq" else 0):
            for i in range(m):
                words = books[torch.arange(m, device=s.device), codes]  # [B, M, D]
                others = words.sum(1) - words[:, i]
                codes[:, i] = (
                    sq_dist((s.detach() - others).unsqueeze(1), books[i : i + 1]).squeeze(1).argmin(-1)
                )
    words = gather_codewords(codes, books)  # [B, M, D]
    # the target of stage i is s minus the words of the other stages (the residual it explains)
    before = torch.cumsum(words, 1) - words if kind == "rq" else words.sum(1, keepdim=True) - words
    targets = s.unsqueeze(1) - before.detach()
    dist = sq_dist(targets, books)
    return Quantized(codes, words.sum(1), dist, targets)


def decode_codes(codes: Tensor, books: Tensor, kind: Quantizer = "pq") -> Tensor:
    """Quantized vectors ``[..., D]`` of codes ``[..., M]`` (concat for PQ, sum for RQ/AQ)."""
    words = gather_codewords(codes, books)
    return words.flatten(-2) if kind == "pq" else words.sum(-2)


def pwr_loss(dist: Tensor, tau: float = 1.0, weights: Tensor | None = None, eps: float = 1e-10) -> Tensor:
    """Popularity-weighted regularization, ``log K - H(p)`` averaged over sub-spaces.

    ``p_i = sum_j r_j a_{j,i} / sum_j r_j`` with soft assignments
    ``a_{j,i} = softmax_i(-dist_{j,i} / tau)`` (paper eq. 12, made differentiable and with
    the sign its text intends). Zero exactly when weighted usage is uniform.

    Args:
        dist: ``[B, M, K]`` squared distances.
        tau: softmax temperature.
        weights: ``[B]`` row weights r_j (None = rows already sampled by weight).
        eps: log guard.
    """
    a = torch.softmax(-dist / tau, dim=-1)  # [B, M, K]
    if weights is None:
        p = a.mean(0)
    else:
        w = weights.to(a.dtype)
        p = (a * w[:, None, None]).sum(0) / w.sum()
    entropy = -(p * torch.log(p + eps)).sum(-1)  # [M]
    return (math.log(dist.shape[-1]) - entropy).mean()


def semi_synthetic_negatives(
    codes: Tensor,
    num_negatives: int,
    codebook_size: int,
    rho: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Hard negatives from real codes (paper eq. 13).

    Each of the M positions is independently replaced with probability ``rho`` by a
    uniformly drawn *different* code; a negative in which nothing was replaced gets one
    random position replaced. So every negative differs from its positive, and the expected
    number of changed positions is ``rho * M + (1 - rho) ** M``.

    Args:
        codes: ``[B, M]`` positive codes.
        num_negatives: negatives per row (N).
        codebook_size: K (>= 2).
        rho: replacement probability in (0, 1].
        generator: optional torch generator (on the codes' device).

    Returns:
        ``[B, N, M]`` int64 codes.
    """
    if codebook_size < 2:
        raise ValueError("negatives need K >= 2")
    if not 0 < rho <= 1:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    b, m = codes.shape
    dev = codes.device
    shape = (b, num_negatives, m)
    mask = torch.rand(shape, device=dev, generator=generator) < rho
    none = ~mask.any(-1)  # [B, N]
    forced = torch.randint(0, m, (b, num_negatives), device=dev, generator=generator)
    mask |= none.unsqueeze(-1) & F.one_hot(forced, m).bool()
    shift = torch.randint(1, codebook_size, shape, device=dev, generator=generator)  # never 0: differs
    pos = codes.long().unsqueeze(1).expand(shape)
    return torch.where(mask, (pos + shift) % codebook_size, pos)


def info_nce(anchor: Tensor, positive: Tensor, negatives: Tensor, tau: float = 0.2) -> Tensor:
    """InfoNCE with cosine similarity / tau (paper eq. 15).

    Args:
        anchor: ``[B, D]`` (the encoded vector s).
        positive: ``[B, D]`` (its quantized vector).
        negatives: ``[B, N, D]`` (quantized semi-synthetic negatives).
        tau: temperature.
    """
    a = F.normalize(anchor, dim=-1, eps=1e-8)
    cands = F.normalize(torch.cat([positive.unsqueeze(1), negatives], 1), dim=-1, eps=1e-8)  # [B, 1+N, D]
    logits = torch.einsum("bd,bnd->bn", a, cands) / tau
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
