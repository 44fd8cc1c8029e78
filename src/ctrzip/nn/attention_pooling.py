"""Attention-based pooling of pairwise interactions (Xiao et al., IJCAI 2017, eqs. 3-5).

Why a module of its own: the attention net is the one piece of AttentionalFM with
weights, and returning the weights lets tests and analyses inspect which pairs matter.
"""

from __future__ import annotations

from torch import Tensor, nn


class AttentionalPooling(nn.Module):
    """Weighted sum of interaction vectors, weights from a one-hidden-layer attention net.

    ``a_p = softmax_p(h^T ReLU(W x_p + b))`` and the output is ``sum_p a_p x_p``.
    The scoring layer ``h`` has no bias: a constant shift cancels in the softmax.

    Args:
        dim: D, width of each interaction vector.
        attention_dim: hidden width of the attention net (the paper's attention factor t).
        dropout: dropout on the attention weights (training only).
    """

    def __init__(self, dim: int, attention_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.Linear(dim, attention_dim),
            nn.ReLU(),
            nn.Linear(attention_dim, 1, bias=False),
        )
        self.dropout = nn.Dropout(dropout)

    def weights(self, x: Tensor) -> Tensor:
        """Attention weights ``[B, P]`` (sum to 1 over P) for interactions ``x [B, P, D]``."""
        return self.attention(x).squeeze(-1).softmax(dim=1)

    def forward(self, x: Tensor) -> Tensor:  # [B, P, D] -> [B, D]
        a = self.dropout(self.weights(x))  # [B, P]
        return (a.unsqueeze(-1) * x).sum(dim=1)
