"""``BandedTable``: mixed-precision embeddings by popularity.

Standard term: *mixed-precision embeddings* (each row stored at a precision that fits its
popularity; the dimension analogue is DLRM's *mixed-dimension embeddings*, Ginart et al.
2021). Ids of every field are sorted by descending training frequency, so popularity bands
are id ranges: the table splits ``[0, V)`` into contiguous bands, each with its own
representation (see ``bands.plan.BandSpec``):

  * ``float``: fp32 rows (the head, lossless);
  * ``rowwise``: fp16/int8/int4/int2 rows with per-row scale and bias (``RowwiseQuantTable``);
  * ``pq``: product quantization, ``M`` sub-spaces of ``K`` codewords, codes bit-packed at
    ``ceil(log2 K)`` bits (torso and tail);
  * ``shared``: ``S`` learned vectors shared by the band's ids (the deepest tail).

No per-id index is stored: a lookup finds its band by ``torch.bucketize`` on the band
starts (kept in the spec, not in the weights) and gathers from that band only.

Special ids:
  * padding (``padding_idx``, default 0) always maps to exactly zero, whatever the band
    covering it stores or learns (the output is masked; its row never shapes a fit);
  * the OOV id ``V - 1`` is an ordinary id of the last band, i.e. it gets the deepest
    tail's representation: OOV stands for rare and unseen ids, so this is what it resembles
    (with a ``shared`` tail of ``S = 1`` it *is* the tail's shared vector). A plan that wants
    OOV kept exact ends with a one-id band ``BandSpec(V - 1, V, "float")``.

Trainable parts: float rows, PQ codebooks, shared vectors; codes and row-wise rows are frozen.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.bands import BAND_KINDS, Band, BandPlan, BandSpec, band_nbytes, validate_plan
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.swappable import register_swappable


def _shape_params(band: BandSpec) -> dict[str, Any]:
    """The parameters that fix a band's stored shapes (fit-only ones dropped)."""
    kind = BAND_KINDS[band.representation]
    return {k: v for k, v in band.params.items() if k not in kind.fit_only}


@register_swappable
class BandedTable(EmbeddingTable):
    """One field's table split into popularity bands (see the module docstring).

    Args:
        num_embeddings: V (ids incl. padding and OOV).
        embedding_dim: D.
        bands: ``BandSpec``s (or their ``to_dict()`` form) tiling ``[0, V)`` in order.
        padding_idx: id mapped to exactly zero (None: no such id).

    Raises:
        CompressionError: an invalid plan or ``padding_idx`` (the message names the band and
            setting).

    Lookups take int32/int64 ids of any shape and return float32 ``[..., D]``; an id outside
    ``[0, V)`` raises ``IndexError``.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        bands: BandPlan | list[dict[str, Any]],
        padding_idx: int | None = 0,
        *,
        _fitted: list[Band] | None = None,
    ) -> None:
        super().__init__()
        if padding_idx is not None and not 0 <= padding_idx < num_embeddings:
            raise CompressionError(
                f"banded table: padding_idx must be in [0, {num_embeddings}), got {padding_idx}"
            )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.plan = validate_plan(bands, num_embeddings, embedding_dim)  # type: ignore[arg-type]
        if _fitted is None:
            _fitted = [
                BAND_KINDS[b.representation](b.end - b.start, embedding_dim, **_shape_params(b))
                for b in self.plan
            ]
        self.bands = nn.ModuleList(_fitted)
        starts = torch.tensor([b.start for b in self.plan])
        self.register_buffer("_starts", starts, persistent=False)
        self.register_buffer("_bounds", starts[1:].clone(), persistent=False)  # bucketize boundaries

    @classmethod
    def from_dense(
        cls,
        weight: Tensor,
        counts: Tensor | np.ndarray | None,
        plan: BandPlan,
        padding_idx: int | None = 0,
        name: str | None = None,
    ) -> BandedTable:
        """Fit every band of ``plan`` to a trained table.

        Each band sees only its own rows: ``float`` copies them, ``rowwise`` quantizes them,
        ``pq`` runs seeded weighted k-means per sub-space (``weighting``: MEC's
        ``max(1, floor(log2 n))`` by default, raw counts ``count``, or ``none``), ``shared``
        takes the count-weighted mean of each bucket. The padding row never shapes a fit.

        Args:
            weight: ``[V, D]`` float table (e.g. ``DenseTable.materialize()``); the result
                lives on its device.
            counts: ``[V]`` training counts per id (None: uniform weights).
            plan: bands tiling ``[0, V)`` (see ``BandSpec``).
            padding_idx: id mapped to exactly zero (None: none).
            name: field name, used in error messages.

        Raises:
            CompressionError: invalid plan, or counts of the wrong shape or negative.
        """
        if weight.dim() != 2:
            raise CompressionError(f"banded table: weight must be [V, D], got {tuple(weight.shape)}")
        where = f"field {name!r}" if name else "banded table"
        v, d = weight.shape
        plan = validate_plan(plan, v, d, where)
        c: Tensor | None = None
        if counts is not None:
            c = torch.as_tensor(np.asarray(counts) if isinstance(counts, np.ndarray) else counts)
            if c.shape != (v,):
                raise CompressionError(
                    f"{where}: counts must have shape [{v}] (one per id), got {tuple(c.shape)}"
                )
            if bool((c < 0).any()):
                raise CompressionError(f"{where}: counts must be >= 0")
            c = c.to(weight.device, torch.float64)
        weight = weight.detach().float()
        fitted = []
        for b in plan:
            local = torch.arange(b.start, b.end, device=weight.device)
            valid = (
                local != padding_idx if padding_idx is not None else torch.ones_like(local, dtype=torch.bool)
            )
            kind = BAND_KINDS[b.representation]
            part = c[b.start : b.end] if c is not None else None
            fitted.append(kind.fit(weight[b.start : b.end], part, valid, **b.params))
        table = cls(v, d, plan, padding_idx=padding_idx, _fitted=fitted)
        return table.to(weight.device)

    # --- EmbeddingTable ------------------------------------------------------------------
    def forward(self, ids: Tensor) -> Tensor:  # [...] -> [..., D]
        flat = ids.reshape(-1).long().contiguous()
        if flat.numel():
            lo, hi = torch.aminmax(flat)
            if int(lo) < 0 or int(hi) >= self.num_embeddings:
                raise IndexError(
                    f"banded table: ids must lie in [0, {self.num_embeddings}), got [{int(lo)}, {int(hi)}]"
                )
        if len(self.bands) == 1:
            out = self.bands[0](flat)
        else:
            which = torch.bucketize(flat, self._bounds, right=True)  # band of each id
            hits = torch.bincount(which, minlength=len(self.bands)).tolist()
            # The busiest band (the head, usually) looks up every position with clamped ids,
            # which saves a scatter of most rows; the other bands overwrite their positions.
            top = max(range(len(hits)), key=hits.__getitem__)
            spec = self.plan[top]
            out = self.bands[top]((flat - spec.start).clamp(0, spec.end - spec.start - 1))
            for b, (band, spec) in enumerate(zip(self.bands, self.plan, strict=True)):
                if b != top and hits[b]:
                    sel = (which == b).nonzero().squeeze(1)
                    out.index_copy_(0, sel, band(flat[sel] - spec.start))
        if self.padding_idx is not None:
            pad = (flat == self.padding_idx).nonzero().squeeze(1)
            if pad.numel():
                out.index_fill_(0, pad, 0.0)
        return out.reshape(*ids.shape, self.embedding_dim)

    def materialize(self) -> Tensor:
        with torch.no_grad():
            return self.forward(torch.arange(self.num_embeddings, device=self._starts.device))

    def nbytes(self) -> int:
        """Bytes of every band's persistent tensors (PQ codes counted bit-packed, as stored)."""
        return sum(band.nbytes() for band in self.bands)  # type: ignore[misc]

    def band_report(self) -> list[dict[str, Any]]:
        """Per band: ``start``, ``end``, ``representation``, ``params``, ``bytes`` (stored),
        ``bits_per_id`` (stored bits per id of the band, amortized codebooks included)."""
        out = []
        for band, spec in zip(self.bands, self.plan, strict=True):
            nbytes = int(band.nbytes())  # type: ignore[operator]
            out.append(
                {**spec.to_dict(), "bytes": nbytes, "bits_per_id": 8 * nbytes / (spec.end - spec.start)}
            )
        return out

    def plan_nbytes(self) -> int:
        """Bytes the plan's formula gives (``bands.plan_nbytes``); equals ``nbytes()``."""
        return sum(band_nbytes(b, self.embedding_dim) for b in self.plan)

    # --- swappable -----------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "bands": [b.to_dict() for b in self.plan],
            "padding_idx": self.padding_idx,
        }

    def extra_repr(self) -> str:
        parts = [f"[{b.start},{b.end}) {b.representation}{_shape_params(b) or ''}" for b in self.plan]
        return f"{self.num_embeddings}, {self.embedding_dim}, bands=" + "; ".join(parts)


__all__ = ["BandSpec", "BandedTable"]
