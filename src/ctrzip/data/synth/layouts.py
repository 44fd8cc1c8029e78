"""Field layouts of the criteo-like and avazu-like datasets: popularity fits, missing values, styles.

Numbers come from /work/shared/spec/SYNTH.md (full-scale power-law fits) and DATA.md (real
distinct counts and min_count survivors). Missing rates are approximately those of the real
Criteo Kaggle training file; fields that go missing together in the real data share a group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ctrzip.data.synth.popularity import PowerLaw, refit

Style = Literal["hex", "int"]


@dataclass(frozen=True)
class CatField:
    """A categorical column: popularity law (full scale), raw token style and teacher role.

    Args:
        name: column name in the raw file.
        law: full-scale power law (SYNTH.md fit).
        style: ``hex`` = 8 hex digits (a bijection of the rank), ``int`` = ``base + rank - 1``.
        base: first integer value for ``int`` style.
        big: id-like field: scaled latents and a purely individual id-bias in the teacher.
        real_distinct: distinct values at full scale; with ``real_survivors`` the refit target.
        real_survivors: values kept by ``min_count`` at full scale (on the layout's survivor split).
    """

    name: str
    law: PowerLaw
    style: Style = "hex"
    base: int = 0
    big: bool = False
    real_distinct: int | None = None
    real_survivors: int | None = None


@dataclass(frozen=True)
class NumField:
    """A Criteo-style integer column: floor(expm1(max(0, mu + sigma z))), z row-correlated.

    Args:
        name: column name.
        mu: location on the log1p scale (log1p of the median when above zero).
        sigma: scale on the log1p scale (heavier tail when larger).
        neg_rate: share of rows holding -1 (real Criteo's I2 has a few negatives).
    """

    name: str
    mu: float
    sigma: float
    neg_rate: float = 0.0


@dataclass(frozen=True)
class MaskGroup:
    """Rows whose slot uniform falls in [lo, hi) take the special value (rank 0) in ``fields``.

    Rank 0 is "missing" in Criteo (an empty cell) and a placeholder token in Avazu (the
    ``a99f214a``-like device_id, the site fields of app traffic). Groups with the same ``slot``
    share one uniform per row, so they can be mutually exclusive.
    """

    fields: tuple[str, ...]
    lo: float
    hi: float
    slot: int


@dataclass(frozen=True)
class Layout:
    """Everything format-specific about one synthetic dataset kind."""

    kind: str
    categorical: tuple[CatField, ...]
    numeric: tuple[NumField, ...]
    masks: tuple[MaskGroup, ...]
    full_rows: int
    survivor_split: float  # share of rows the real survivor counts were measured on
    min_count: int
    positive_rate: float
    row_factor_corr: float = 0.3  # correlation of numeric z through a per-row factor

    def special_rate(self, name: str) -> float:
        """Share of rows holding rank 0 (missing / placeholder) in field ``name``."""
        return sum(g.hi - g.lo for g in self.masks if name in g.fields)

    def laws(self, rows: int, popularity: str = "scaled") -> dict[str, PowerLaw]:
        """Power law per categorical field for a file of ``rows`` rows.

        Args:
            rows: rows to generate.
            popularity: ``scaled`` refits the big fields so that distinct values and min_count
                survivors scale linearly with rows (a miniature of the real data); ``full`` keeps
                the full-scale fits (statistically a row subsample of the real data).
        """
        if popularity not in ("scaled", "full"):
            raise ValueError(f"popularity must be 'scaled' or 'full', got {popularity!r}")
        out = {}
        for f in self.categorical:
            if popularity == "full" or f.real_distinct is None or f.real_survivors is None:
                out[f.name] = f.law
                continue
            scale = rows / self.full_rows
            present = rows * (1.0 - self.special_rate(f.name))
            out[f.name] = refit(
                float(f.real_distinct * scale),
                float(f.real_survivors * scale),
                present,
                present * self.survivor_split,
                self.min_count,
            )
        return out


def _criteo() -> Layout:
    fits = [  # (N, s) per C1..C26, SYNTH.md
        (1460, 0.3), (583, 0.3), (2.03e9, 1.06), (5.93e6, 1.14), (305, 0.3), (24, 0.5),
        (1.25e4, 1.54), (633, 0.3), (3, 0.5), (9.36e4, 1.34), (5680, 1.56), (1.37e9, 1.08),
        (3190, 0.3), (27, 0.5), (1.5e4, 1.58), (1.17e8, 1.10), (10, 0.5), (5650, 1.56),
        (2170, 0.3), (4, 0.5), (2.6e8, 1.08), (18, 0.5), (15, 0.5), (3.15e5, 1.28),
        (105, 0.3), (1.46e5, 1.32),
    ]  # fmt: skip
    distinct = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
                27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]  # fmt: skip
    # DATA.md vocab sizes after min_count 10 on 36.7M rows, minus pad and OOV
    survivors = [1444, 552, 157337, 117820, 304, 16, 11880, 628, 3, 39528, 5129, 156654, 3174, 26,
                 11041, 148911, 10, 4558, 2001, 3, 154562, 16, 15, 53029, 80, 40953]  # fmt: skip
    big = {"C3", "C4", "C7", "C10", "C12", "C15", "C16", "C21", "C24", "C26"}
    refit_fields = {"C3", "C4", "C10", "C12", "C16", "C21", "C24", "C26"}  # > 50k real values
    cats = []
    for i, ((n, s), d, k) in enumerate(zip(fits, distinct, survivors, strict=True)):
        name = f"C{i + 1}"
        target = name in refit_fields
        cats.append(
            CatField(
                name,
                PowerLaw(int(n), s),
                big=name in big,
                real_distinct=d if target else None,
                real_survivors=k if target else None,
            )
        )
    nums = (
        NumField("I1", 0.7, 1.2), NumField("I2", 1.4, 1.8, neg_rate=0.04), NumField("I3", 2.0, 1.5),
        NumField("I4", 1.6, 1.0), NumField("I5", 7.6, 1.2), NumField("I6", 3.5, 1.6),
        NumField("I7", 1.4, 1.5), NumField("I8", 2.2, 1.0), NumField("I9", 3.6, 1.3),
        NumField("I10", 0.4, 0.6), NumField("I11", 0.9, 0.9), NumField("I12", -0.5, 1.2),
        NumField("I13", 1.6, 1.2),
    )  # fmt: skip
    groups = [  # (fields, missing rate): fields missing together in the real log share a group
        (("C3", "C4", "C12", "C16", "C21", "C24"), 0.034), (("C19", "C20", "C25", "C26"), 0.44),
        (("C6",), 0.121), (("C22",), 0.763), (("I1", "I10"), 0.454), (("I3",), 0.215),
        (("I4", "I13"), 0.222), (("I6",), 0.224), (("I5",), 0.026), (("I7", "I9", "I11"), 0.043),
        (("I8",), 0.0005), (("I12",), 0.766),
    ]  # fmt: skip
    masks = tuple(MaskGroup(f, 0.0, rate, slot) for slot, (f, rate) in enumerate(groups))
    return Layout("criteo-like", tuple(cats), nums, masks, 45_840_617, 0.8, 10, 0.25)


AVAZU_COLUMNS = (
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
    "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
    "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)  # fmt: skip


def _avazu() -> Layout:
    h, i = "hex", "int"
    spec = [  # name, N, s, style, int base, big
        ("C1", 7, 2.5, i, 1001, False), ("banner_pos", 7, 2.0, i, 0, False),
        ("site_id", 4737, 1.2, h, 0, True), ("site_domain", 7745, 1.2, h, 0, True),
        ("site_category", 26, 1.6, h, 0, False), ("app_id", 8552, 1.3, h, 0, True),
        ("app_domain", 559, 1.5, h, 0, False), ("app_category", 36, 1.8, h, 0, False),
        ("device_id", 2_686_408, 1.1, h, 0, True), ("device_ip", 6_729_486, 1.1, h, 0, True),
        ("device_model", 8251, 1.2, h, 0, True), ("device_type", 5, 2.5, i, 0, False),
        ("device_conn_type", 4, 2.5, i, 0, False), ("C14", 2626, 1.1, i, 15000, False),
        ("C15", 8, 2.5, i, 216, False), ("C16", 9, 2.5, i, 36, False), ("C17", 435, 1.1, i, 1000, False),
        ("C18", 4, 1.5, i, 0, False), ("C19", 68, 1.3, i, 33, False), ("C20", 172, 1.2, i, 100000, False),
        ("C21", 60, 1.3, i, 1, False),
    ]  # fmt: skip
    # min_count-2 survivors over all rows, chosen so the total is ~2.0M (MEC paper: 2,018,012);
    # DATA.md's per-field figures (820k / 2.9M on an 80% split) would total ~3.7M instead.
    targets = {"device_id": (2_686_408, 450_000), "device_ip": (6_729_486, 1_500_000)}
    cats = tuple(
        CatField(name, PowerLaw(n, s), style, base, big, *targets.get(name, (None, None)))  # type: ignore[arg-type]
        for name, n, s, style, base, big in spec
    )
    masks = (
        MaskGroup(("app_id", "app_domain", "app_category"), 0.0, 0.64, 0),  # site traffic
        MaskGroup(("site_id", "site_domain", "site_category"), 0.64, 1.0, 0),  # app traffic
        MaskGroup(("device_id",), 0.0, 0.825, 1),  # the dominant anonymous device id
        MaskGroup(("C20",), 0.0, 0.47, 2),  # C20 = -1
    )
    return Layout("avazu-like", cats, (), masks, 40_428_967, 1.0, 2, 0.17)


LAYOUTS = {"criteo-like": _criteo(), "avazu-like": _avazu()}


def get_layout(kind: str) -> Layout:
    """The layout for ``kind``; a clear error for anything else."""
    try:
        return LAYOUTS[kind]
    except KeyError:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose one of {sorted(LAYOUTS)}") from None
