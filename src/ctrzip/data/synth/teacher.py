"""The hidden teacher that turns sampled features into click probabilities.

Logit = first-order biases + grouped pairwise FM terms + a random tanh MLP over the feature
latents + a few triple products + numeric effects + a heavy-tailed purely individual bias on
id-like fields + Gaussian logit noise. Per-id parameters are hashed from (seed, field, id), so
nothing per id is stored. Each component is normalized to a target standard deviation on a
calibration sample (raw scales differ 10-50x), then the intercept is solved by bisection for
the positive rate. Design and default strengths: /work/shared/spec/SYNTH.md ("Teacher").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctrzip.data.synth.hashing import id_states, mix_key, normals, stream

TABLE_LIMIT = 1 << 17  # fields with fewer ids keep their per-id parameters in a table
COMPONENTS = ("bias", "pair", "mlp", "triple", "numeric", "id_bias")
_TAG_FIELD = 0x7EAC


@dataclass
class TeacherConfig:
    """Strength and shape of the hidden teacher (defaults: SYNTH.md's calibrated "id-heavy" setting).

    Args:
        positive_rate: target click rate; ``None`` = the dataset kind's real rate.
        latent_dim: k, the latent size per feature.
        prototypes: prototype latents per field (cluster structure shared by many ids).
        prototype_fraction: pf; latent = sqrt(pf) * prototype + sqrt(1 - pf) * individual noise.
        big_field_scale: latent multiplier on id-like fields.
        pair_groups: field groups with a signed FM term each.
        group_fraction: share of fields in each group.
        mlp_hidden: widths of the random tanh MLP over all latents.
        triples: number of random three-field products.
        std_bias, std_pair, std_mlp, std_triple, std_numeric, std_id_bias: target standard
            deviation of each logit component.
        noise_std: Gaussian logit noise (irreducible error).
        calibration_rows: rows sampled to normalize components and solve the intercept.
    """

    positive_rate: float | None = None
    latent_dim: int = 8
    prototypes: int = 32
    prototype_fraction: float = 0.3
    big_field_scale: float = 1.5
    pair_groups: int = 4
    group_fraction: float = 0.4
    mlp_hidden: tuple[int, ...] = (64, 32)
    triples: int = 8
    std_bias: float = 1.0
    std_pair: float = 1.4
    std_mlp: float = 0.8
    std_triple: float = 0.5
    std_numeric: float = 0.4
    std_id_bias: float = 1.0
    noise_std: float = 0.8
    calibration_rows: int = 50_000

    def __post_init__(self) -> None:
        if self.positive_rate is not None and not 0.0 < self.positive_rate < 1.0:
            raise ValueError(f"positive_rate must be in (0, 1), got {self.positive_rate}")
        if not 0.0 <= self.prototype_fraction <= 1.0:
            raise ValueError(f"prototype_fraction must be in [0, 1], got {self.prototype_fraction}")
        if not 0.0 < self.group_fraction <= 1.0:
            raise ValueError(f"group_fraction must be in (0, 1], got {self.group_fraction}")
        if (
            min(self.latent_dim, self.prototypes, self.calibration_rows) < 1
            or min(self.mlp_hidden, default=1) < 1
        ):
            raise ValueError("latent_dim, prototypes, mlp_hidden and calibration_rows must be >= 1")
        if min(self.stds().values()) < 0 or self.noise_std < 0 or min(self.pair_groups, self.triples) < 0:
            raise ValueError("component stds, noise_std, pair_groups and triples must be >= 0")

    def stds(self) -> dict[str, float]:
        """Target standard deviation per logit component."""
        return {c: float(getattr(self, f"std_{c}")) for c in COMPONENTS}


@dataclass
class Teacher:
    """Teacher parameters that are not per id (prototypes, groups, MLP) and the calibration.

    Built by :func:`build_teacher`; picklable so worker processes receive it once.
    """

    config: TeacherConfig
    fields: tuple[str, ...]  # categorical teacher fields, in column order
    big: np.ndarray  # [F] bool
    keys: np.ndarray  # [F] uint64 hash key per field
    proto_latent: np.ndarray  # [F, P, k] float32
    proto_bias: np.ndarray  # [F, P]
    groups: np.ndarray  # [G, F] bool
    group_weight: np.ndarray  # [G]
    mlp: list[np.ndarray]  # weight matrices, the last one [h, 1]
    triples: np.ndarray  # [T, 3] field indices
    triple_sign: np.ndarray  # [T]
    numeric_coef: np.ndarray  # [Dn, 5]: linear, bump amplitude, bump scale, bump centre, missing
    supports: np.ndarray  # [F] largest id per field (tables are cached for small ones)
    center: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)
    intercept: float = 0.0
    _tables: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_tables"] = {}  # rebuilt lazily in each process, never shipped
        return state

    def lookup(self, f: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`feature_params` for a column of ids: from a cached table when the field's
        support is small, else hashed once per distinct id."""
        if self.supports[f] < TABLE_LIMIT:
            if f not in self._tables:
                self._tables[f] = self.feature_params(f, np.arange(int(self.supports[f]) + 1))
            latent, bias, id_bias = self._tables[f]
            return latent[ids], bias[ids], id_bias[ids]
        uniq, inv = np.unique(ids, return_inverse=True)
        latent, bias, id_bias = self.feature_params(f, uniq)
        return latent[inv], bias[inv], id_bias[inv]

    def feature_params(self, f: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(latent [n, k] float32, bias [n], id-bias [n]) of field ``f``'s ids, from their hash."""
        cfg = self.config
        k, pf = cfg.latent_dim, cfg.prototype_fraction
        state = id_states(self.keys[f], ids)
        proto = (stream(state, 0) % np.uint64(cfg.prototypes)).astype(np.intp)
        z = normals(state, k + 3, first_stream=1)
        latent = np.sqrt(pf) * self.proto_latent[f][proto] + np.sqrt(1 - pf) * z[:, :k]
        if self.big[f]:
            latent *= cfg.big_field_scale
        bias = np.sqrt(pf) * self.proto_bias[f][proto] + np.sqrt(1 - pf) * z[:, k]
        id_bias = z[:, k + 1] * np.abs(z[:, k + 2]) if self.big[f] else np.zeros(len(ids))
        return latent.astype(np.float32), bias, id_bias

    def raw_components(self, ids: np.ndarray, numeric: np.ndarray | None) -> dict[str, np.ndarray]:
        """Un-normalized logit components.

        Args:
            ids: [n, F] int64 ranks per teacher field (0 = missing / placeholder).
            numeric: [n, Dn] float64 raw numeric values, NaN = missing (``None`` when Dn = 0).
        """
        n, num_fields = ids.shape
        k = self.config.latent_dim
        lat = np.empty((n, num_fields, k), dtype=np.float32)
        out = {c: np.zeros(n) for c in COMPONENTS}
        for f in range(num_fields):
            lat[:, f], bias, id_bias = self.lookup(f, ids[:, f])
            out["bias"] += bias
            out["id_bias"] += id_bias
        flat = lat.reshape(n, -1)  # [n, F * k]
        if len(self.groups):
            # group sums of latents in one GEMM: [n, F*k] @ kron(groups^T, I_k) -> [n, G, k]
            member = np.kron(self.groups.T.astype(np.float32), np.eye(k, dtype=np.float32))
            total = (flat @ member).reshape(n, -1, k)
            sq = np.einsum("nfk,nfk->nf", lat, lat) @ self.groups.T.astype(np.float32)  # [n, G]
            pair = 0.5 * (np.einsum("ngk,ngk->ng", total, total) - sq)
            out["pair"] = pair.astype(np.float64) @ self.group_weight
        h = flat
        for w in self.mlp[:-1]:
            h = np.tanh(h @ w)
        out["mlp"] = (h @ self.mlp[-1])[:, 0].astype(np.float64)
        for (a, b, c), sign in zip(self.triples, self.triple_sign, strict=True):
            out["triple"] += sign * (lat[:, a] * lat[:, b] * lat[:, c]).sum(axis=1)
        if numeric is not None and numeric.shape[1]:
            missing = np.isnan(numeric)
            t = np.log1p(np.maximum(np.nan_to_num(numeric, nan=0.0), 0.0))
            lin, amp, width, centre, miss = self.numeric_coef.T
            eff = lin * t + amp * np.tanh(width * (t - centre)) + miss * missing
            out["numeric"] = np.where(missing, miss, eff).sum(axis=1)
        return out

    def logit(self, ids: np.ndarray, numeric: np.ndarray | None) -> np.ndarray:
        """Noise-free teacher logit (the oracle score): normalized components + intercept."""
        raw = self.raw_components(ids, numeric)
        total = np.full(len(ids), self.intercept)
        for c in COMPONENTS:
            if self.scale.get(c, 0.0) != 0.0:
                total += (raw[c] - self.center[c]) * self.scale[c]
        return total


def build_teacher(
    config: TeacherConfig,
    fields: tuple[str, ...],
    big: tuple[bool, ...],
    supports: tuple[int, ...],
    num_numeric: int,
    seed: int,
) -> Teacher:
    """Draw the teacher's shared parameters from a generator seeded by ``seed`` (uncalibrated).

    Args:
        config: teacher shape and strengths.
        fields: teacher field names (categorical columns, plus derived ones such as hour of day).
        big: per field, whether it is id-like (scaled latents, individual id-bias).
        supports: per field, the largest id it can hold.
        num_numeric: number of numeric columns.
        seed: dataset seed.
    """
    rng = np.random.default_rng([seed, 2, 0])
    nf, k, p = len(fields), config.latent_dim, config.prototypes
    keys = np.array([mix_key(seed, _TAG_FIELD, f) for f in range(nf)], dtype=np.uint64)
    groups = rng.random((config.pair_groups, nf)) < config.group_fraction
    sign = rng.choice([-1.0, 1.0], size=config.pair_groups)
    widths = (nf * k, *config.mlp_hidden, 1)
    mlp = [
        rng.normal(0, 1.0 / np.sqrt(a), size=(a, b)).astype(np.float32)
        for a, b in zip(widths[:-1], widths[1:], strict=True)
    ]
    triples = np.array([rng.choice(nf, size=3, replace=False) for _ in range(config.triples)], dtype=np.intp)
    triples = triples.reshape(-1, 3)
    coef = np.column_stack(
        [
            rng.normal(0, 0.5, num_numeric),  # linear in log1p(value)
            rng.normal(0, 1.0, num_numeric),  # bump amplitude
            rng.uniform(0.5, 2.0, num_numeric),  # bump sharpness
            rng.uniform(0.5, 4.0, num_numeric),  # bump centre on the log1p scale
            rng.normal(0, 1.0, num_numeric),  # effect of a missing value
        ]
    )
    return Teacher(
        config=config,
        fields=fields,
        big=np.array(big, dtype=bool),
        keys=keys,
        proto_latent=rng.normal(size=(nf, p, k)).astype(np.float32),
        proto_bias=rng.normal(size=(nf, p)),
        groups=groups,
        group_weight=sign * rng.uniform(0.5, 1.5, config.pair_groups),
        mlp=mlp,
        triples=triples,
        triple_sign=rng.choice([-1.0, 1.0], size=config.triples),
        numeric_coef=coef,
        supports=np.array(supports, dtype=np.int64),
    )


def calibrate(
    teacher: Teacher, ids: np.ndarray, numeric: np.ndarray | None, noise: np.ndarray, positive_rate: float
) -> None:
    """Normalize each component to its target std on a sample and solve the intercept in place.

    The MLP's hidden pre-activations are first rescaled to std 1.5 so its tanh units are
    neither linear nor saturated. ``noise`` holds the sample's N(0, 1) logit-noise draws.
    """
    h = _latents(teacher, ids)
    for w in teacher.mlp[:-1]:
        w *= np.float32(1.5 / max(float((h @ w).std()), 1e-12))
        h = np.tanh(h @ w)
    raw = teacher.raw_components(ids, numeric)
    for c, target in teacher.config.stds().items():
        std = float(raw[c].std())
        teacher.center[c] = float(raw[c].mean())
        teacher.scale[c] = target / std if std > 1e-12 and target > 0 else 0.0
    teacher.intercept = 0.0
    base = teacher.logit(ids, numeric) + teacher.config.noise_std * noise
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        rate = float(np.mean(_sigmoid(base + mid)))
        lo, hi = (mid, hi) if rate < positive_rate else (lo, mid)
    teacher.intercept = 0.5 * (lo + hi)


def _latents(teacher: Teacher, ids: np.ndarray) -> np.ndarray:
    """[n, F * k] float32 latents of a sample (the MLP's input)."""
    parts = [teacher.lookup(f, ids[:, f])[0] for f in range(ids.shape[1])]
    return np.concatenate(parts, axis=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))
