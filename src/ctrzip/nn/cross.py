"""Explicit cross networks: DCN's vector cross, DCNv2's matrix cross (+ low-rank mixture), GDCN's gated cross.

All three act on the flattened field vectors ``x0 = flatten(e)`` ``[B, F*D]`` and keep
that width, so each layer adds one order of explicit feature crossing on top of a
residual connection. They are interaction modules: compression never swaps them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CrossNet(nn.Module):
    """DCN cross network (Wang et al., ADKDD 2017): ``x_{l+1} = x0 * (x_l . w_l) + b_l + x_l``.

    Each layer has only ``2 * d`` parameters (a vector ``w_l`` and a bias ``b_l``), so the
    cross term ``x0 x_l^T w_l`` is a rank-one interaction of the input with itself.

    Args:
        in_dim: d, width of ``x0``.
        num_layers: number of cross layers.
    """

    def __init__(self, in_dim: int, num_layers: int = 3) -> None:
        super().__init__()
        self.weights = nn.ModuleList(nn.Linear(in_dim, 1, bias=False) for _ in range(num_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(in_dim)) for _ in range(num_layers))

    def forward(self, x0: Tensor) -> Tensor:  # [B, d] -> [B, d]
        x = x0
        for w, b in zip(self.weights, self.biases, strict=True):
            x = x0 * w(x) + b + x  # w(x): [B, 1]
        return x


class CrossNetV2(nn.Module):
    """DCNv2 cross network (Wang et al., WWW 2021): ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l``.

    With ``num_experts`` set, each layer is the paper's low-rank mixture (DCN-Mix):
    ``x_{l+1} = sum_i G_i(x_l) * x0 * (U_i g(C_i g(V_i^T x_l)) + b_l) + x_l`` with ``g = tanh``
    and a softmax gate over the experts, cutting the ``d x d`` matrix to ``3 r d``-ish per
    expert.

    Args:
        in_dim: d, width of ``x0``.
        num_layers: number of cross layers.
        low_rank: r of each expert (only used with ``num_experts``).
        num_experts: None for full-rank layers, else experts per layer.
    """

    def __init__(
        self, in_dim: int, num_layers: int = 3, low_rank: int = 32, num_experts: int | None = None
    ) -> None:
        super().__init__()
        if num_experts is None:
            self.layers = nn.ModuleList(nn.Linear(in_dim, in_dim) for _ in range(num_layers))
        else:
            self.layers = nn.ModuleList(
                _LowRankMixtureCross(in_dim, low_rank, num_experts) for _ in range(num_layers)
            )

    def forward(self, x0: Tensor) -> Tensor:  # [B, d] -> [B, d]
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class _LowRankMixtureCross(nn.Module):
    """``sum_i G_i(x) (U_i tanh(C_i tanh(V_i^T x))) + b``: the DCN-Mix replacement of ``W x + b``.

    The gate weights sum to one, so the shared bias can be added once outside the sum;
    the caller multiplies by ``x0``.
    """

    def __init__(self, in_dim: int, rank: int, num_experts: int) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.empty(num_experts, in_dim, rank))  # V_i
        self.c = nn.Parameter(torch.empty(num_experts, rank, rank))  # C_i
        self.u = nn.Parameter(torch.empty(num_experts, rank, in_dim))  # U_i^T
        for p in (self.v, self.c, self.u):
            nn.init.xavier_normal_(p)
        self.gate = nn.Linear(in_dim, num_experts, bias=False)
        self.bias = nn.Parameter(torch.zeros(in_dim))

    def forward(self, x: Tensor) -> Tensor:  # [B, d] -> [B, d]
        h = torch.tanh(torch.einsum("bd,edr->ber", x, self.v))  # [B, E, r]
        h = torch.tanh(torch.einsum("ber,ers->bes", h, self.c))  # [B, E, r]
        experts = torch.einsum("ber,erd->bed", h, self.u)  # [B, E, d]
        g = torch.softmax(self.gate(x), dim=-1)  # [B, E]
        return (g.unsqueeze(-1) * experts).sum(1) + self.bias


class GatedCrossNet(nn.Module):
    """GDCN gated cross network (Wang et al., CIKM 2023).

    ``c_{l+1} = c0 * (W_l c_l + b_l) * sigmoid(Wg_l c_l) + c_l``: a DCNv2 cross layer
    whose cross term is filtered element-wise by a learned information gate, which is
    what lets GDCN stack deeper cross layers without the noisy high-order terms.

    Args:
        in_dim: d, width of ``c0``.
        num_layers: number of gated cross layers.
    """

    def __init__(self, in_dim: int, num_layers: int = 3) -> None:
        super().__init__()
        self.cross = nn.ModuleList(nn.Linear(in_dim, in_dim) for _ in range(num_layers))
        self.gates = nn.ModuleList(nn.Linear(in_dim, in_dim, bias=False) for _ in range(num_layers))

    def forward(self, c0: Tensor) -> Tensor:  # [B, d] -> [B, d]
        c = c0
        for w, wg in zip(self.cross, self.gates, strict=True):
            c = c0 * w(c) * torch.sigmoid(wg(c)) + c
        return c
