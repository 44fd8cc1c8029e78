"""Interaction layers shared by several models (FM, first-order term).

Model-specific layers (cross networks, attention, bilinear, ...) live in their own
files under ``ctrzip/nn/`` so each stays small.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.nn.embedding.field import FieldEmbedding


class FirstOrder(nn.Module):
    """Logistic-regression part: sum of per-feature scalar weights plus a bias.

    It holds a ``FieldEmbedding`` of dim 1 (``self.embedding``), so compression
    methods find and swap its tables like any other embedding.
    """

    def __init__(self, schema: FeatureSchema, init_std: float = 1e-4) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(schema, 1, init_std=init_std)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> Tensor:  # [B]
        return self.embedding(batch).sum(dim=(1, 2)) + self.bias


def fm_pairwise(emb: Tensor, reduce: bool = True) -> Tensor:
    """Factorization-machine second-order term (Rendle 2010), in O(F D).

    Args:
        emb: ``[B, F, D]`` field vectors.
        reduce: sum over D (-> ``[B]``) or keep the bi-interaction vector (-> ``[B, D]``, NFM).
    """
    square_of_sum = emb.sum(dim=1).pow(2)  # [B, D]
    sum_of_square = emb.pow(2).sum(dim=1)  # [B, D]
    bi = 0.5 * (square_of_sum - sum_of_square)
    return bi.sum(dim=1) if reduce else bi
