"""Multi-head self-attention over fields: AutoInt's interacting layer (Song et al., CIKM 2019).

Each field vector attends to every field (itself included), so a stack of L layers
models interactions up to order L + 1 with attention weights that say which fields
combine.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class InteractingLayer(nn.Module):
    """One AutoInt interacting layer.

    ``out_m = ReLU(concat_h [sum_k softmax_k(<Q_h e_m, K_h e_k>) V_h e_k] + W_res e_m)``.

    Args:
        in_dim: width of each field vector.
        head_dim: d' per head.
        num_heads: H.
        use_residual: add ``W_res e_m`` (paper eq. 8).
        use_scale: divide scores by ``sqrt(d')`` (Transformer habit; the paper does not).
        layer_norm: LayerNorm on the output (FuxiCTR option; off in the paper).
    """

    def __init__(
        self,
        in_dim: int,
        head_dim: int = 32,
        num_heads: int = 2,
        use_residual: bool = True,
        use_scale: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        out_dim = head_dim * num_heads
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.use_scale = use_scale
        self.query = nn.Linear(in_dim, out_dim, bias=False)
        self.key = nn.Linear(in_dim, out_dim, bias=False)
        self.value = nn.Linear(in_dim, out_dim, bias=False)
        self.residual = nn.Linear(in_dim, out_dim, bias=False) if use_residual else None
        self.norm = nn.LayerNorm(out_dim) if layer_norm else None
        self.out_dim = out_dim

    def _split(self, x: Tensor) -> Tensor:  # [B, F, H*d'] -> [B, H, F, d']
        b, f, _ = x.shape
        return x.view(b, f, self.num_heads, self.head_dim).transpose(1, 2)

    def attention(self, x: Tensor) -> Tensor:
        """Attention weights ``[B, H, F, F]`` (row m: how field m mixes all fields)."""
        q, k = self._split(self.query(x)), self._split(self.key(x))
        scores = q @ k.transpose(-1, -2)  # [B, H, F, F]
        if self.use_scale:
            scores = scores / math.sqrt(self.head_dim)
        return torch.softmax(scores, dim=-1)

    def forward(self, x: Tensor) -> Tensor:  # [B, F, in_dim] -> [B, F, H*d']
        out = self.attention(x) @ self._split(self.value(x))  # [B, H, F, d']
        out = out.transpose(1, 2).flatten(2)  # [B, F, H*d']
        if self.residual is not None:
            out = out + self.residual(x)
        out = torch.relu(out)
        return self.norm(out) if self.norm is not None else out


class InteractingStack(nn.Module):
    """``num_layers`` interacting layers; the first reads D-dim field vectors, the rest H*d'.

    Args:
        in_dim: D.
        num_layers: number of interacting layers.
        head_dim, num_heads, use_residual, use_scale, layer_norm: see ``InteractingLayer``.
    """

    def __init__(
        self,
        in_dim: int,
        num_layers: int = 3,
        head_dim: int = 32,
        num_heads: int = 2,
        use_residual: bool = True,
        use_scale: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        layers = []
        width = in_dim
        for _ in range(num_layers):
            layer = InteractingLayer(width, head_dim, num_heads, use_residual, use_scale, layer_norm)
            layers.append(layer)
            width = layer.out_dim
        self.layers = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:  # [B, F, D] -> [B, F, H*d']
        return self.layers(x)
