"""Streaming first/second moments and their PCA, the statistics behind feature mimicking.

Why float64 running sums: fp32 sums of ``y y^T`` over millions of rows give indefinite
covariances (reference-code-notes B.4.4). The sums merge by addition, so chunked passes and
DDP ranks combine exactly (all-reduce ``n``, ``s1``, ``s2``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


class RunningMoments:
    """Observer accumulating ``n``, ``sum(y)`` and ``sum(y y^T)`` of vectors in float64.

    It never changes the activation it sees. Rows are the last dimension: an input of
    shape ``[..., d]`` contributes ``prod(...)`` vectors of width ``d``.

    Args:
        dim: expected width, or None to take it from the first update.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self.n = 0
        self.s1: Tensor | None = None  # [d] float64
        self.s2: Tensor | None = None  # [d, d] float64

    def _ensure(self, dim: int, device: torch.device) -> None:
        if self.dim is not None and self.dim != dim:
            raise ValueError(f"RunningMoments expects width {self.dim}, got {dim}")
        self.dim = dim
        if self.s1 is None:
            self.s1 = torch.zeros(dim, dtype=torch.float64, device=device)
            self.s2 = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Add the rows of ``x [..., d]``."""
        x = x.detach()
        self._ensure(int(x.shape[-1]), x.device)
        y = x.reshape(-1, x.shape[-1]).to(torch.float64)
        assert self.s1 is not None and self.s2 is not None
        self.n += int(y.shape[0])
        self.s1 += y.sum(0).to(self.s1.device)
        self.s2 += (y.T @ y).to(self.s2.device)

    def merge(self, other: RunningMoments) -> RunningMoments:
        """Add another observer's sums into this one (chunks, DDP ranks); returns self."""
        if other.s1 is None:
            return self
        assert other.s2 is not None
        self._ensure(int(other.s1.shape[0]), other.s1.device)
        assert self.s1 is not None and self.s2 is not None
        self.n += other.n
        self.s1 += other.s1.to(self.s1.device)
        self.s2 += other.s2.to(self.s2.device)
        return self

    def all_reduce_(self) -> RunningMoments:
        """Sum ``n``, ``s1`` and ``s2`` over the ranks of the process group, in place (a no-op in
        one process); returns self. Every rank must call it; a rank that saw no rows (an empty
        shard) contributes zeros. The sums travel as one float64 buffer, so ``n`` is exact up
        to 2^53 rows.

        Raises:
            ValueError: ranks disagree on the width, or no rank knows it.
        """
        from ctrzip import distributed as dist

        if not dist.is_distributed():
            return self
        dev = dist.collective_device()
        widths = dist.all_gather_rows(torch.tensor([self.dim if self.dim is not None else -1], device=dev))
        known = {int(w) for w in widths.tolist() if w >= 0}
        if len(known) != 1:
            raise ValueError(f"RunningMoments.all_reduce_: ranks have widths {sorted(known)} (need one)")
        d = known.pop()
        self._ensure(d, dev if self.s1 is None else self.s1.device)
        assert self.s1 is not None and self.s2 is not None
        n = torch.tensor([float(self.n)], dtype=torch.float64, device=dev)
        buf = dist.all_reduce_sum_(torch.cat([n, self.s1.to(dev), self.s2.to(dev).flatten()]))
        self.n = int(buf[0].item())
        self.s1 = buf[1 : 1 + d].to(self.s1.device).clone()
        self.s2 = buf[1 + d :].reshape(d, d).to(self.s2.device).clone()
        return self

    def _require(self) -> tuple[Tensor, Tensor]:
        if self.n == 0 or self.s1 is None or self.s2 is None:
            raise RuntimeError("RunningMoments has seen no data")
        return self.s1, self.s2

    @property
    def mean(self) -> Tensor:
        s1, _ = self._require()
        return s1 / self.n

    @property
    def second_moment(self) -> Tensor:
        """``E[y y^T]``."""
        _, s2 = self._require()
        return s2 / self.n

    def covariance(self) -> Tensor:
        """Symmetrized ``E[y y^T] - mu mu^T`` (float64)."""
        mu = self.mean
        c = self.second_moment - torch.outer(mu, mu)
        return 0.5 * (c + c.T)

    def state_dict(self) -> dict[str, Tensor]:
        s1, s2 = self._require()
        return {"n": torch.tensor(self.n, dtype=torch.int64), "s1": s1.cpu(), "s2": s2.cpu()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> RunningMoments:
        m = cls(int(state["s1"].shape[0]))
        m.n = int(state["n"])
        m.s1 = state["s1"].to(torch.float64).clone()
        m.s2 = state["s2"].to(torch.float64).clone()
        return m


def table_moments(
    weight: Tensor, counts: Tensor | np.ndarray, ignore_ids: tuple[int, ...] = ()
) -> RunningMoments:
    """Exact moments of a table's outputs over the training data, from id counts alone.

    A pass over the samples looks up row ``v`` exactly ``counts[v]`` times, so
    ``sum(y) = counts @ X`` and ``sum(y y^T) = X^T diag(counts) X`` (no data pass needed).

    Args:
        weight: ``[V, D]`` materialized table.
        counts: ``[V]`` training-split occurrences of each id.
        ignore_ids: ids whose lookups are not observed (the padding of sequence fields).
    """
    x = weight.detach().to(torch.float64)
    c = torch.as_tensor(np.asarray(counts), dtype=torch.float64, device=x.device).clone()
    if c.shape != (x.shape[0],):
        raise ValueError(f"counts have shape {tuple(c.shape)}, table has {x.shape[0]} rows")
    if (c < 0).any():
        raise ValueError("counts must be non-negative")
    for i in ignore_ids:
        c[i] = 0
    m = RunningMoments(int(x.shape[1]))
    m.n = int(c.sum().item())
    m.s1 = c @ x
    m.s2 = x.T @ (c[:, None] * x)
    return m


@dataclass
class PCAResult:
    """Eigen-decomposition of a covariance, descending, with canonical signs.

    Attributes:
        mean: ``[d]`` float64.
        basis: ``[d, d]`` float64, column ``j`` is the ``j``-th eigenvector, ``u_j . mean >= 0``.
        eigenvalues: ``[d]`` float64, descending, negatives clamped to 0.
    """

    mean: Tensor
    basis: Tensor
    eigenvalues: Tensor

    @property
    def energy(self) -> Tensor:
        """Fraction of variance kept by the top ``k`` directions, for ``k = 1..d``."""
        total = self.eigenvalues.sum()
        if total <= 0:
            return torch.ones_like(self.eigenvalues)
        return torch.cumsum(self.eigenvalues, 0) / total

    def rank_for(self, variance: float) -> int:
        """Smallest ``k`` keeping at least ``variance`` of the variance."""
        e = self.energy
        k = int(torch.searchsorted(e, torch.tensor(variance, dtype=e.dtype) - 1e-12).item()) + 1
        return min(k, int(e.shape[0]))

    def energy_report(self, rank: int) -> dict[str, object]:
        """What a rank keeps, and the ranks for 90/95/99 % (the paper's Table 11)."""
        return {
            "rank": rank,
            "energy_kept": float(self.energy[rank - 1]),
            "rank_for_energy": {str(v): self.rank_for(v) for v in (0.9, 0.95, 0.99)},
        }


def pca(moments: RunningMoments) -> PCAResult:
    """Float64 ``eigh`` of the centered covariance, sorted descending, signs canonical.

    Canonical sign: each ``u_j`` is flipped so that ``u_j . mu >= 0`` (when ``u_j . mu`` is
    ~0, the largest-magnitude entry is made positive). Without it, a ReLU inserted between
    the factors can wreck the model before fine-tuning (reference-code-notes B.5).
    """
    mu = moments.mean
    evals, evecs = torch.linalg.eigh(moments.covariance())
    evals = evals.flip(0).clamp_min(0.0)
    evecs = evecs.flip(1)
    proj = mu @ evecs  # [d]
    scale = mu.abs().max().clamp_min(1e-300)
    tie = proj.abs() <= 1e-12 * scale
    peak = evecs.gather(0, evecs.abs().argmax(0, keepdim=True)).squeeze(0)
    sign = torch.where(tie, torch.sign(peak), torch.sign(proj))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return PCAResult(mean=mu.cpu(), basis=(evecs * sign).cpu(), eigenvalues=evals.cpu())


def choose_rank(result: PCAResult, rank: int | None, variance: float | None) -> int:
    """A fixed rank (capped at the width) or the smallest rank keeping ``variance``."""
    width = int(result.eigenvalues.shape[0])
    if rank is not None:
        return min(rank, width)
    if variance is None:
        raise ValueError("give a rank or a variance fraction")
    return result.rank_for(variance)
