"""Factorization machine (Rendle, ICDM 2010): first order plus all pairwise dot products."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.models.base import CTRModel, ModelConfig, register_model
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.interactions import FirstOrder, fm_pairwise


@dataclass
class FMConfig(ModelConfig):
    """FM has only the shared options (``embedding_dim`` is the factor size k)."""


@register_model("fm")
class FM(CTRModel):
    """logit = first order + sum_{i<j} <e_i, e_j>."""

    config_class = FMConfig

    def __init__(self, schema: FeatureSchema, config: FMConfig, embedding: FieldEmbedding | None = None):
        super().__init__(schema, config, embedding)
        self.first_order = FirstOrder(schema, config.embedding_init_std)

    def forward(self, batch: Batch) -> Tensor:
        emb = self.embedding(batch)  # [B, F, D]
        return self.first_order(batch) + fm_pairwise(emb)
