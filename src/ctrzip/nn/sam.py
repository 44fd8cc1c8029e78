"""Self-attention feature-interaction layers of SAM (Cheng & Xue, SIGIR 2021,
"Looking at CTR Prediction Again: Is Attention All You Need?").

The paper writes feature interaction as ``o_i = sum_j s(e_i, e_j) * v_ij`` and recovers
known models by the choice of score and value:
  * ``sam1``  - no interaction (``o_i = e_i``; with a Linear head this is LR over embeddings).
  * ``sam2a`` - ``o_ij = <e_i, e_j> W_ij``: FM scores with a learned vector per field pair
    (generalizes FwFM/FvFM); keeps all F*F pairs.
  * ``sam2e`` - ``o_ij = <e_i, e_j> (e_i * e_j)``: element-wise values; all F*F pairs.
  * ``sam3a`` - ``o_i = sum_j <e_i, K e_j> W_ij [+ Q e_i]``: attention-style scores with a key
    projection, field-pair value vectors, optional residual; stacked in layers.
  * ``sam3e`` - ``o_i = sum_j <e_i, K e_j> (e_i * e_j) [+ Q e_i]``; stacked in layers.
Scores are raw (no softmax), as the paper argues the normalization is not what helps.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ctrzip.config import ConfigError

SAMKind = Literal["sam1", "sam2a", "sam2e", "sam3a", "sam3e"]


def _pair_products(emb: Tensor) -> Tensor:
    """``e_i * e_j`` for all ordered pairs: ``[B, F, D]`` -> ``[B, F, F, D]``."""
    return emb.unsqueeze(2) * emb.unsqueeze(1)


class SAM3Layer(nn.Module):
    """One type-3 layer: ``o_i = sum_j <e_i, K e_j> v_ij [+ Q e_i]``.

    Args:
        num_fields: F.
        dim: D.
        values: ``"a"`` for learned field-pair vectors ``W_ij`` (SAM3A), ``"e"`` for ``e_i * e_j`` (SAM3E).
        use_residual: add ``Q e_i``.
    """

    def __init__(
        self, num_fields: int, dim: int, values: Literal["a", "e"], use_residual: bool = True
    ) -> None:
        super().__init__()
        self.key = nn.Linear(dim, dim, bias=False)
        self.residual = nn.Linear(dim, dim, bias=False) if use_residual else None
        self.pair_weight = nn.Parameter(torch.ones(num_fields, num_fields, dim)) if values == "a" else None

    def forward(self, emb: Tensor) -> Tensor:  # [B, F, D] -> [B, F, D]
        scores = emb @ self.key(emb).transpose(1, 2)  # [B, F, F]: <e_i, K e_j>
        if self.pair_weight is not None:
            out = torch.einsum("bij,ijd->bid", scores, self.pair_weight)
        else:
            out = (scores.unsqueeze(-1) * _pair_products(emb)).sum(dim=2)
        if self.residual is not None:
            out = out + self.residual(emb)
        return out


class SAMInteraction(nn.Module):
    """The SAM interaction block: ``[B, F, D]`` -> ``[B, N, D]`` (N = F, or F*F for type 2).

    Args:
        kind: one of ``sam1, sam2a, sam2e, sam3a, sam3e`` (see module docstring).
        num_fields: F.
        dim: D.
        num_layers: stacked layers (type 3 only).
        use_residual: residual projection in type-3 layers.
        dropout: dropout on the block output.
    """

    def __init__(
        self,
        kind: SAMKind,
        num_fields: int,
        dim: int,
        num_layers: int = 3,
        use_residual: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in ("sam1", "sam2a", "sam2e", "sam3a", "sam3e"):
            raise ConfigError(f"unknown SAM interaction {kind!r}")
        self.kind = kind
        self.pair_weight = nn.Parameter(torch.ones(num_fields, num_fields, dim)) if kind == "sam2a" else None
        self.layers = nn.Sequential(
            *(
                SAM3Layer(num_fields, dim, "a" if kind == "sam3a" else "e", use_residual)
                for _ in range(num_layers if kind.startswith("sam3") else 0)
            )
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.num_outputs = num_fields * num_fields if kind.startswith("sam2") else num_fields

    def forward(self, emb: Tensor) -> Tensor:  # [B, F, D] -> [B, N, D]
        if self.kind.startswith("sam2"):
            scores = (emb @ emb.transpose(1, 2)).unsqueeze(-1)  # [B, F, F, 1]: <e_i, e_j>
            values = self.pair_weight if self.pair_weight is not None else _pair_products(emb)
            out = (scores * values).flatten(1, 2)  # [B, F*F, D]
        else:
            out = self.layers(emb)  # identity for sam1
        return self.dropout(out)
