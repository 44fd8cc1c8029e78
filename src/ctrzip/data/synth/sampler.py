"""Row sampling: categorical ranks, special values, Criteo-style integers, labels; one chunk at a time.

Chunk ``i`` draws from ``numpy.random.default_rng([seed, 0, i])`` in a fixed order, so a chunk's
content depends only on (seed, i, chunk_rows, rows), never on which process makes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctrzip.data.synth.hashing import mix_key
from ctrzip.data.synth.layouts import Layout
from ctrzip.data.synth.popularity import PowerLaw
from ctrzip.data.synth.teacher import Teacher

HOURS = 240  # avazu-like: 10 days of hourly slots
_TAG_TOKEN = 0x70CE


@dataclass
class Plan:
    """Everything a worker needs to make any chunk (built once, sent to each worker once)."""

    layout: Layout
    rows: int
    seed: int
    chunk_rows: int
    laws: dict[str, PowerLaw]
    token_keys: np.ndarray  # [F] uint32, raw-token bijection key per categorical field
    teacher: Teacher

    @property
    def num_chunks(self) -> int:
        return -(-self.rows // self.chunk_rows)


@dataclass
class Sample:
    """Sampled features of n rows, before formatting."""

    row_index: np.ndarray  # [n] int64, position in the file (sets avazu's hour)
    ranks: np.ndarray  # [n, F] int64, 0 = missing / placeholder
    numeric: np.ndarray | None  # [n, Dn] float64, NaN = missing

    def hour_slot(self, rows: int) -> np.ndarray:
        """0..239: the file is in time order, like the real Avazu log."""
        return self.row_index * HOURS // max(rows, 1)

    def teacher_ids(self, layout: Layout, rows: int) -> np.ndarray:
        """[n, F_teacher] ids the teacher sees; avazu-like adds hour of day as one more field."""
        if layout.numeric:
            return self.ranks
        return np.column_stack([self.ranks, self.hour_slot(rows) % 24 + 1])


def token_keys(layout: Layout, seed: int) -> np.ndarray:
    """One 32-bit key per categorical field for the rank -> raw token bijection."""
    keys = [int(mix_key(seed, _TAG_TOKEN, f)) & 0xFFFFFFFF for f in range(len(layout.categorical))]
    return np.array(keys, dtype=np.uint32)


def sample_rows(plan: Plan, rng: np.random.Generator, row_index: np.ndarray) -> Sample:
    """Draw the features of the rows at ``row_index`` from ``rng`` (fixed draw order)."""
    layout = plan.layout
    n = len(row_index)
    slots = rng.random((n, 1 + max((g.slot for g in layout.masks), default=0)))
    u = rng.random((n, len(layout.categorical)))
    ranks = np.empty((n, len(layout.categorical)), dtype=np.int64)
    column = {f.name: j for j, f in enumerate(layout.categorical)}
    for j, f in enumerate(layout.categorical):
        ranks[:, j] = plan.laws[f.name].sample(u[:, j])
    numeric = _numeric(layout, rng, n) if layout.numeric else None
    num_column = {f.name: j for j, f in enumerate(layout.numeric)}
    for g in layout.masks:
        hit = (slots[:, g.slot] >= g.lo) & (slots[:, g.slot] < g.hi)
        for name in g.fields:
            if name in column:
                ranks[hit, column[name]] = 0
            else:
                numeric[hit, num_column[name]] = np.nan  # type: ignore[index]
    return Sample(row_index=row_index, ranks=ranks, numeric=numeric)


def _numeric(layout: Layout, rng: np.random.Generator, n: int) -> np.ndarray:
    """floor(expm1(max(0, mu + sigma z))) with z correlated through a per-row factor."""
    rho = layout.row_factor_corr
    factor = rng.standard_normal((n, 1))
    z = np.sqrt(rho) * factor + np.sqrt(1.0 - rho) * rng.standard_normal((n, len(layout.numeric)))
    neg = rng.random((n, len(layout.numeric)))
    mu = np.array([f.mu for f in layout.numeric])
    sigma = np.array([f.sigma for f in layout.numeric])
    neg_rate = np.array([f.neg_rate for f in layout.numeric])
    values = np.floor(np.expm1(np.maximum(0.0, mu + sigma * z)))
    return np.where(neg < neg_rate, -1.0, values)


def draw_labels(plan: Plan, rng: np.random.Generator, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """(labels [n] int8, oracle logits [n]): Bernoulli(sigmoid(oracle + noise))."""
    n = len(sample.row_index)
    oracle = plan.teacher.logit(sample.teacher_ids(plan.layout, plan.rows), sample.numeric)
    noisy = oracle + plan.teacher.config.noise_std * rng.standard_normal(n)
    labels = (rng.random(n) < 0.5 * (1.0 + np.tanh(0.5 * noisy))).astype(np.int8)
    return labels, oracle


def chunk_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of chunk ``index``: seeded by (seed, index) only."""
    return np.random.default_rng([seed, 0, index])


def calibration_rng(seed: int) -> np.random.Generator:
    """The generator of the teacher's calibration sample (disjoint from every chunk's stream)."""
    return np.random.default_rng([seed, 1, 0])
