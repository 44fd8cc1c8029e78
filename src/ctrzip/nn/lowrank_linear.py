"""``LowRankLinear``: a drop-in for ``nn.Linear(n -> m)`` as ``Linear(n -> k) -> [ReLU] -> Linear(k -> m)``.

Feature mimicking (Yu et al., KDD 2024, eqs. 1-5) builds it from the output statistics of
the layer it replaces; the SVD baseline builds it from the weight. Either way the
surrounding BatchNorm/activation/dropout of the tower stay untouched.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ctrzip.nn.embedding.base import tensor_bytes
from ctrzip.nn.swappable import register_swappable


@register_swappable
class LowRankLinear(nn.Module):
    """Factorized Linear ``n -> k -> m`` with an optional ReLU between the factors.

    The inner activation is a fresh ``nn.ReLU`` (never the tower's own module, whose
    parameters, e.g. PReLU's, are sized for ``m``).

    Args:
        in_features: n.
        out_features: m.
        rank: k.
        relu: insert a ReLU between the factors.
        down_bias: give the first factor a bias (False for the paper's bias form, eq. 5).
    """

    def __init__(
        self, in_features: int, out_features: int, rank: int, relu: bool = False, down_bias: bool = True
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.relu = relu
        self.down = nn.Linear(in_features, rank, bias=down_bias)
        self.act: nn.Module = nn.ReLU() if relu else nn.Identity()
        self.up = nn.Linear(rank, out_features)

    def forward(self, x: Tensor) -> Tensor:  # [..., n] -> [..., m]
        return self.up(self.act(self.down(x)))

    @classmethod
    def from_factors(
        cls, down_w: Tensor, down_b: Tensor | None, up_w: Tensor, up_b: Tensor, relu: bool = False
    ) -> LowRankLinear:
        """Build from explicit factors ``up_w @ act(down_w @ x + down_b) + up_b``.

        Args:
            down_w: ``[k, n]``.
            down_b: ``[k]`` or None.
            up_w: ``[m, k]``.
            up_b: ``[m]``.
            relu: inner ReLU.
        """
        k, n = down_w.shape
        m = up_w.shape[0]
        mod = cls(n, m, k, relu=relu, down_bias=down_b is not None)
        with torch.no_grad():
            mod.down.weight.copy_(down_w)
            if down_b is not None:
                assert mod.down.bias is not None
                mod.down.bias.copy_(down_b)
            mod.up.weight.copy_(up_w)
            mod.up.bias.copy_(up_b)
        return mod

    @classmethod
    def from_pca(
        cls, linear: nn.Linear, mean: Tensor, basis: Tensor, relu: bool = False, bias_form: str = "centered"
    ) -> LowRankLinear:
        """Feature mimicking: project the layer's output onto its top-``k`` principal directions.

        ``centered`` (default): ``U^T W x + U^T b`` -> [ReLU] -> ``U h + (I - U U^T) mu``; without
        the ReLU this is ``mu + U U^T (y - mu)``, the PCA reconstruction of ``y = W x + b``.
        ``paper`` (eq. 5): ``U^T W x`` -> [ReLU] -> ``U h + mu + U U^T (b - mu)``; identical
        without the ReLU, different with it.

        Args:
            linear: the layer replaced (weight ``[m, n]``).
            mean: ``[m]`` mean of its outputs.
            basis: ``[m, k]`` orthonormal top-k eigenvectors (columns).
            relu: inner ReLU.
            bias_form: ``centered`` or ``paper``.
        """
        w = linear.weight.detach().to(torch.float64)
        b = (
            linear.bias.detach().to(torch.float64)
            if linear.bias is not None
            else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
        )
        u = basis.to(torch.float64).to(w.device)
        mu = mean.to(torch.float64).to(w.device)
        down_w = u.T @ w
        if bias_form == "centered":
            down_b: Tensor | None = u.T @ b
            up_b = mu - u @ (u.T @ mu)
        elif bias_form == "paper":
            down_b = None
            up_b = mu + u @ (u.T @ (b - mu))
        else:
            raise ValueError(f"bias_form must be 'centered' or 'paper', got {bias_form!r}")
        dt = linear.weight.dtype
        mod = cls.from_factors(
            down_w.to(dt), None if down_b is None else down_b.to(dt), u.to(dt), up_b.to(dt), relu
        )
        return mod.to(linear.weight.device)

    @classmethod
    def from_svd(cls, linear: nn.Linear, rank: int, relu: bool = False) -> LowRankLinear:
        """SVD baseline: ``W ~ (U_k S_k^1/2)(S_k^1/2 V_k^T)``, the original bias on the second factor."""
        w = linear.weight.detach().to(torch.float64)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        k = min(rank, int(s.shape[0]))
        root = s[:k].sqrt()
        dt = linear.weight.dtype
        up_b = (
            linear.bias.detach()
            if linear.bias is not None
            else torch.zeros(w.shape[0], dtype=dt, device=w.device)
        )
        mod = cls.from_factors(
            (root[:, None] * vh[:k]).to(dt), None, (u[:, :k] * root).to(dt), up_b.to(dt), relu
        )
        return mod.to(linear.weight.device)

    def nbytes(self) -> int:
        return tensor_bytes(*self.parameters())

    def spec(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "rank": self.rank,
            "relu": self.relu,
            "down_bias": self.down.bias is not None,
        }

    @classmethod
    def empty(cls, **spec: Any) -> LowRankLinear:
        return cls(**spec)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.rank} -> {self.out_features}, relu={self.relu}"
