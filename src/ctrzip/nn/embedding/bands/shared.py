"""``shared`` band: the band's ids share ``S`` learned vectors, id -> ``(id - start) % S``.

The deepest tail carries almost no individual signal (ids seen 10-50 times); giving it a
handful of vectors costs ``S * D`` floats for the whole band. ``S = 1`` is one vector for the
whole tail, like the OOV row; ``S > 1`` hashes ids to buckets by position (consecutive ids,
which have similar counts, land in different buckets). Fitted as the count-weighted mean of
each bucket's trained rows (the vector with the least expected squared lookup error).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctrzip.nn.embedding.bands.base import Band, fit_weights, is_int, register_band


@register_band
class SharedBand(Band):
    """``vectors [S, D]`` float32 parameter (trainable)."""

    kind = "shared"
    defaults = {"S": 1}

    def __init__(self, rows: int, dim: int, S: int = 1) -> None:  # noqa: N803 (the paper's name)
        super().__init__(rows, dim)
        self.num_vectors = S
        self.vectors = nn.Parameter(torch.zeros(S, dim))

    @classmethod
    def check(cls, params: dict[str, Any], rows: int, dim: int) -> None:
        s = params["S"]
        if not is_int(s) or not 1 <= s <= rows:
            raise ValueError(
                f"S (shared vectors) must be an integer in [1, {rows}] (the band's ids), got {s!r}"
            )

    @classmethod
    def bytes_for(cls, rows: int, dim: int, **params: Any) -> int:
        return params["S"] * dim * 4

    @classmethod
    def fit(cls, weight: Tensor, counts: Tensor | None, valid: Tensor, **params: Any) -> SharedBand:
        rows, dim = weight.shape
        s = params["S"]
        band = cls(rows, dim, S=s).to(weight.device)
        w = fit_weights(counts, valid, "count").double()
        bucket = torch.arange(rows, device=weight.device) % s
        mass = torch.zeros(s, dtype=torch.float64, device=weight.device).index_add_(0, bucket, w)
        sums = torch.zeros(s, dim, dtype=torch.float64, device=weight.device)
        sums.index_add_(0, bucket, weight.detach().double() * w.unsqueeze(1))
        with torch.no_grad():  # a bucket holding only padding keeps a zero vector
            band.vectors.copy_((sums / mass.clamp_min(1e-300).unsqueeze(1)).float())
        return band

    def forward(self, local_ids: Tensor) -> Tensor:
        return F.embedding(local_ids % self.num_vectors, self.vectors)
