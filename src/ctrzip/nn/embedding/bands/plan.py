"""Band plans: which representation serves which id range of one field's table.

Ids are sorted by descending training frequency, so popularity bands are id ranges and a
plan is a short list of ``BandSpec(start, end, representation, params)`` tiling ``[0, V)``:
no per-id index is stored. ``plan_nbytes`` gives the stored bytes of a plan without
building it (what an allocator compares); it equals ``BandedTable.nbytes()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.bands import float_rows, pq, rowwise, shared  # noqa: F401  (register kinds)
from ctrzip.nn.embedding.bands.base import BAND_KINDS, is_int


@dataclass(frozen=True)
class BandSpec:
    """One band: ids ``start <= id < end`` served by ``representation`` with ``params``.

    Representations and their parameters (defaults in brackets):
      * ``float``: fp32 rows (none).
      * ``rowwise``: ``bits`` [8] in 16/8/4/2, ``optimized_qparams`` [False].
      * ``pq``: ``M`` [1] sub-spaces, ``K`` [256] codewords, fit-only ``iters`` [20],
        ``seed`` [0], ``weighting`` [``log2``].
      * ``shared``: ``S`` [1] vectors shared by the band's ids.
    """

    start: int
    end: int
    representation: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "representation": self.representation,
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BandSpec:
        """From ``{start, end, representation, params}`` (``params`` optional).

        Raises:
            CompressionError: a key is missing or unknown.
        """
        keys = {"start", "end", "representation", "params"}
        missing = sorted(keys - {"params"} - set(d))
        unknown = sorted(set(d) - keys)
        if missing or unknown:
            raise CompressionError(
                f"band {dict(d)}: needs keys start, end, representation (and optional params); "
                f"missing {missing}, unknown {unknown}"
            )
        return cls(d["start"], d["end"], d["representation"], dict(d.get("params") or {}))


BandPlan = Sequence[BandSpec]


def validate_plan(
    plan: BandPlan, num_embeddings: int, dim: int, where: str = "banded table"
) -> list[BandSpec]:
    """Check a plan and complete every band's parameters with their defaults.

    Args:
        plan: bands in id order, tiling ``[0, num_embeddings)`` without gaps or overlaps.
        num_embeddings: V (ids incl. padding 0 and OOV ``V - 1``).
        dim: D.
        where: what the plan is for (e.g. ``field 'C3'``), named in errors.

    Returns:
        The bands with complete ``params`` (a new list).

    Raises:
        CompressionError: naming ``where``, the band's index and id range, and the setting:
            empty plan, gaps/overlaps, unknown representation or parameter, bad values.
    """
    bands = [b if isinstance(b, BandSpec) else BandSpec.from_dict(b) for b in plan]  # type: ignore[arg-type]
    if not bands:
        raise CompressionError(
            f"{where}: the band plan is empty; give bands covering ids [0, {num_embeddings})"
        )
    out, expect = [], 0
    for i, b in enumerate(bands):
        loc = f"{where}: band {i} [{b.start}, {b.end})"
        if not (is_int(b.start) and is_int(b.end)):
            raise CompressionError(f"{loc}: start and end must be integer ids")
        if not isinstance(b.params, Mapping):
            raise CompressionError(f"{loc}: params must be a mapping, got {b.params!r}")
        if b.start != expect:
            what = "starts a gap" if b.start > expect else "overlaps the previous band"
            raise CompressionError(
                f"{loc} {what}: bands must tile [0, {num_embeddings}) in order, expected start {expect}"
            )
        if b.end <= b.start:
            raise CompressionError(f"{loc} is empty: end must be greater than start")
        kind = BAND_KINDS.get(b.representation)
        if kind is None:
            raise CompressionError(
                f"{loc}: unknown representation {b.representation!r} (one of {sorted(BAND_KINDS)})"
            )
        unknown = sorted(set(b.params) - set(kind.defaults))
        if unknown:
            allowed = ", ".join(kind.defaults) or "none"
            raise CompressionError(
                f"{loc} {b.representation}: unknown parameter(s) {unknown} (allowed: {allowed})"
            )
        params = {**kind.defaults, **b.params}
        try:
            kind.check(params, b.end - b.start, dim)
        except ValueError as err:
            raise CompressionError(f"{loc} {b.representation}: {err}") from None
        out.append(BandSpec(b.start, b.end, b.representation, params))
        expect = b.end
    if expect != num_embeddings:
        raise CompressionError(
            f"{where}: bands end at id {expect}, but the table has "
            f"{num_embeddings} ids (0..{num_embeddings - 1})"
        )
    return out


def band_nbytes(band: BandSpec, dim: int) -> int:
    """Stored bytes of one band (its ``params`` complete, as ``validate_plan`` returns them)."""
    kind = BAND_KINDS[band.representation]
    return kind.bytes_for(band.end - band.start, dim, **{**kind.defaults, **band.params})


def plan_nbytes(plan: BandPlan, num_embeddings: int, dim: int) -> int:
    """Stored bytes of the ``BandedTable`` a plan builds (validated first)."""
    return sum(band_nbytes(b, dim) for b in validate_plan(plan, num_embeddings, dim))
