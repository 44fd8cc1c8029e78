"""AFN's logarithmic transformation layer (Cheng et al., AAAI 2020 "Adaptive Factorization Network").

A log-neuron j computes ``y_j = exp(sum_i w_ij ln|e_i|) = prod_i |e_i| ** w_ij`` element-wise
over D, i.e. a cross feature whose per-field orders ``w_ij`` are learned (and may be
fractional or negative) instead of being fixed to 2, 3, ... as in FM-style models.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LogTransform(nn.Module):
    """``[B, F, D]`` field vectors -> ``[B, L, D]`` log-neuron outputs.

    Absolute values are clamped to ``eps`` so the log is finite for zero (padding or
    dead) coordinates. With ``batch_norm`` (paper default) BatchNorm is applied to the
    log values (per field) and to the exponentiated outputs (per neuron), which keeps
    ``exp`` in a sane range during training.

    Args:
        num_fields: F.
        num_neurons: L, number of logarithmic neurons.
        batch_norm: BatchNorm after the log and after the exp.
        eps: smallest magnitude fed to the log.
    """

    def __init__(self, num_fields: int, num_neurons: int, batch_norm: bool = True, eps: float = 1e-7) -> None:
        super().__init__()
        self.coefficients = nn.Linear(num_fields, num_neurons, bias=False)  # w_ij, [L, F]
        self.log_norm = nn.BatchNorm1d(num_fields) if batch_norm else None
        self.exp_norm = nn.BatchNorm1d(num_neurons) if batch_norm else None
        self.eps = eps
        self.num_neurons = num_neurons

    def forward(self, emb: Tensor) -> Tensor:  # [B, F, D] -> [B, L, D]
        z = torch.log(emb.abs().clamp_min(self.eps))  # [B, F, D]
        if self.log_norm is not None:
            z = self.log_norm(z)
        y = torch.exp(torch.einsum("bfd,lf->bld", z, self.coefficients.weight))  # [B, L, D]
        return self.exp_norm(y) if self.exp_norm is not None else y
