"""FiBiNet's bilinear interaction (Huang et al., RecSys 2019): ``p_ij = (v_i W) * v_j`` for i < j.

Why: an inner product (FM) or Hadamard product alone cannot weight dimensions across
the two vectors; the D x D matrix W can, at ``D^2`` parameters per matrix.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ctrzip.config import ConfigError

BilinearType = Literal["field_all", "field_each", "field_interaction"]


class BilinearInteraction(nn.Module):
    """All pairs ``i < j`` of ``[B, F, D]`` -> ``[B, F(F-1)/2, D]`` (pairs in row-major order).

    Args:
        num_fields: F.
        dim: D.
        kind: ``field_all`` (one W), ``field_each`` (W_i for the left field i; the last
            field is never on the left, so F - 1 matrices) or
            ``field_interaction`` (W_ij per pair).
    """

    def __init__(self, num_fields: int, dim: int, kind: BilinearType = "field_interaction") -> None:
        super().__init__()
        if num_fields < 2:
            raise ConfigError("bilinear interaction needs at least 2 fields")
        left, right = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("left", left, persistent=False)
        self.register_buffer("right", right, persistent=False)
        n_mats = {"field_all": 1, "field_each": num_fields - 1, "field_interaction": left.numel()}
        if kind not in n_mats:
            raise ConfigError(f"unknown bilinear kind {kind!r} (known: {', '.join(n_mats)})")
        self.kind = kind
        self.weight = nn.Parameter(torch.empty(n_mats[kind], dim, dim))  # [n, D, D]
        bound = 1.0 / dim**0.5
        nn.init.uniform_(self.weight, -bound, bound)

    @property
    def num_pairs(self) -> int:
        return self.left.numel()

    def forward(self, emb: Tensor) -> Tensor:  # [B, F, D] -> [B, P, D]
        vi, vj = emb[:, self.left], emb[:, self.right]  # [B, P, D]
        if self.kind == "field_all":
            vw = vi @ self.weight[0]
        elif self.kind == "field_each":
            vw = torch.einsum("bfd,fde->bfe", emb[:, :-1], self.weight)[:, self.left]
        else:
            vw = torch.einsum("bpd,pde->bpe", vi, self.weight)
        return vw * vj
