"""Truncated power-law popularity per field, its expected head/tail counts, and the refit.

A field's values are ranks r = 1..N (rank 1 = most popular) with p(r) proportional to r^-s,
sampled by the inverse CDF of the continuous law on [1, N + 1) and floored: exact in float64
for supports of ~2e9, with no table. ``p(r)`` is the law's mass on [r, r + 1).

Why a refit: for s > 1 the number of distinct values and of min_count survivors grows like
rows^(1/s), so a law fitted to 45M real rows, sampled at 1M rows, keeps far more of its head
than a scaled-down Criteo would. :func:`refit` solves (N, s) so that, at the requested row
count, both counts equal the real ones scaled linearly by rows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

MAX_SUPPORT = 2**32 - 1  # raw tokens are a bijection of uint32


@dataclass(frozen=True)
class PowerLaw:
    """p(rank r) proportional to r^-s on r = 1..n, as a continuous law floored to ranks.

    Args:
        n: support size N (number of possible values).
        s: exponent; s < 1 is flat-ish (small fields), s > 1 long-tailed (id-like fields).
    """

    n: int
    s: float

    def __post_init__(self) -> None:
        if not 1 <= self.n <= MAX_SUPPORT:
            raise ValueError(f"support n must be in [1, {MAX_SUPPORT}], got {self.n}")
        if not 0.0 <= self.s <= 10.0:
            raise ValueError(f"exponent s must be in [0, 10], got {self.s}")

    @property
    def _a(self) -> float:
        return 1.0 - self.s

    def _g(self, x: np.ndarray) -> np.ndarray:
        """Unnormalized CDF: integral of t^-s over [1, x]."""
        lx = np.log(x)
        if abs(self._a) < 1e-12:
            return lx
        return np.expm1(self._a * lx) / self._a

    def mass(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Probability of the continuous law on [lo, hi) (1 <= lo <= hi <= n + 1), cancellation-free."""
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        z = float(self._g(np.float64(self.n + 1)))
        ratio = np.log(hi / lo)
        if abs(self._a) < 1e-12:
            return ratio / z
        return np.exp(self._a * np.log(lo)) * np.expm1(self._a * ratio) / self._a / z

    def pmf(self, ranks: np.ndarray) -> np.ndarray:
        """Exact probability of each integer rank."""
        r = np.asarray(ranks, dtype=np.float64)
        return self.mass(r, r + 1.0)

    def sample(self, u: np.ndarray) -> np.ndarray:
        """Ranks (int64 in 1..n) for uniforms ``u`` in [0, 1), by the inverse CDF."""
        big_l = np.log(self.n + 1.0)
        if abs(self._a) < 1e-12:
            x = np.exp(u * big_l)
        else:
            x = np.exp(np.log1p(u * np.expm1(self._a * big_l)) / self._a)
        return np.clip(np.floor(x), 1, self.n).astype(np.int64)

    def _bins(self, exact_head: int = 1024, step: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
        """(ranks per bin, probability per rank in the bin): exact ranks, then geometric bins."""
        head = min(self.n, exact_head)
        edges = np.arange(1, head + 2, dtype=np.float64)
        if self.n > head:
            num = int(np.log((self.n + 1) / (head + 1)) / step) + 2
            tail = np.unique(np.floor(np.geomspace(head + 1, self.n + 1, num=num)))
            edges = np.concatenate([edges, tail[1:]])
            edges[-1] = self.n + 1
        width = np.diff(edges)
        return width, self.mass(edges[:-1], edges[1:]) / width

    def expected_distinct(self, draws: float) -> float:
        """Expected number of distinct values in ``draws`` samples (Poisson approximation)."""
        width, p = self._bins()
        return float(np.sum(width * -np.expm1(-draws * p)))

    def expected_survivors(self, draws: float, min_count: int) -> float:
        """Expected number of values seen at least ``min_count`` times in ``draws`` samples."""
        from scipy.special import gammainc  # P(Poisson(lam) >= m) = regularized lower gamma(m, lam)

        width, p = self._bins()
        return float(np.sum(width * gammainc(min_count, draws * p)))


def _support_for(s: float, distinct: float, draws: float) -> int:
    """Smallest support whose expected distinct count reaches ``distinct`` (capped at MAX_SUPPORT)."""
    from scipy.optimize import brentq

    lo, hi = np.log(distinct * 1.0001 + 1.0), np.log(MAX_SUPPORT)

    def gap(log_n: float) -> float:
        return PowerLaw(int(np.exp(log_n)), s).expected_distinct(draws) - distinct

    if gap(hi) <= 0:
        return MAX_SUPPORT
    if gap(lo) >= 0:
        return int(np.exp(lo))
    return int(np.exp(brentq(gap, lo, hi, xtol=2e-3)))


@functools.lru_cache(maxsize=256)
def refit(distinct: float, survivors: float, draws: float, survivor_draws: float, min_count: int) -> PowerLaw:
    """(N, s) matching a target distinct count and a target number of min_count survivors.

    For each exponent s the support N is solved so that ``distinct`` values are expected in
    ``draws`` samples; then s is solved so that ``survivors`` values are expected to be seen at
    least ``min_count`` times in ``survivor_draws`` samples (that count falls as s grows). When
    even N = 2^32 - 1 cannot produce enough distinct values (small row counts), N stays at the
    cap: survivors, which set the model's vocabulary, are matched; the raw distinct count falls
    short and is reported by :meth:`PowerLaw.expected_distinct`.

    Args:
        distinct: target number of distinct values.
        survivors: target number of values seen at least ``min_count`` times.
        draws: samples that ``distinct`` refers to (rows where the field is present).
        survivor_draws: samples that ``survivors`` refers to (e.g. the training split's rows).
        min_count: the survivor threshold.
    """
    if not 0 < survivors < distinct:
        raise ValueError(f"need 0 < survivors < distinct, got {survivors}, {distinct}")

    def law(s: float) -> PowerLaw:
        return PowerLaw(_support_for(s, distinct, draws), s)

    def gap(s: float) -> float:
        return np.log(law(s).expected_survivors(survivor_draws, min_count) / survivors)

    from scipy.optimize import brentq

    s_lo, s_hi = 0.3, 4.0
    if gap(s_lo) <= 0:
        return law(s_lo)
    if gap(s_hi) >= 0:
        return law(s_hi)
    return law(float(brentq(gap, s_lo, s_hi, xtol=1e-4)))
