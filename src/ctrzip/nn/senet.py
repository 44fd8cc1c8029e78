"""Squeeze-and-excitation over fields (FiBiNet, Huang et al., RecSys 2019).

Why: it learns a per-sample importance weight for each field from a pooled summary of
all fields, so informative fields are amplified and noisy ones damped before the
bilinear interaction.
"""

from __future__ import annotations

from torch import Tensor, nn


class SENet(nn.Module):
    """``A = ReLU(W2 ReLU(W1 mean_D(e)))``; output ``e * A``.

    Args:
        num_fields: F.
        reduction_ratio: r; the bottleneck has ``max(1, F // r)`` units.
    """

    def __init__(self, num_fields: int, reduction_ratio: float = 3.0) -> None:
        super().__init__()
        hidden = max(1, int(num_fields / reduction_ratio))
        self.excitation = nn.Sequential(
            nn.Linear(num_fields, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, num_fields, bias=False),
            nn.ReLU(),
        )

    def weights(self, emb: Tensor) -> Tensor:
        """Field weights ``[B, F]`` (non-negative) from ``emb [B, F, D]``."""
        return self.excitation(emb.mean(dim=-1))

    def forward(self, emb: Tensor) -> Tensor:  # [B, F, D] -> [B, F, D]
        return emb * self.weights(emb).unsqueeze(-1)
