"""Attentional factorization machine (Xiao et al., IJCAI 2017).

FM weighs every feature pair equally; here an attention net scores each pair's
element-wise product, so uninformative pairs are down-weighted.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ctrzip._utils import check_rate
from ctrzip.config import ConfigError
from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.models.base import CTRModel, ModelConfig, register_model
from ctrzip.nn.attention_pooling import AttentionalPooling
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.interactions import FirstOrder
from ctrzip.nn.product import pairwise_products


@dataclass
class AttentionalFMConfig(ModelConfig):
    """Args:
    attention_dim: hidden width of the attention net (the paper's attention factor).
    attention_dropout: dropout on the attention weights.
    dropout: dropout on the pooled interaction vector (the paper's dropout on the
        pair-wise interaction layer).
    """

    attention_dim: int = 8
    attention_dropout: float = 0.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attention_dim < 1:
            raise ConfigError("attention_dim must be >= 1")
        check_rate("attention_dropout", self.attention_dropout)
        check_rate("dropout", self.dropout)


@register_model("attentional_fm")
class AttentionalFM(CTRModel):
    """logit = first order + p^T sum_{i<j} a_ij (e_i * e_j), a = softmax over pairs.

    The attention net reads interaction vectors, not the flattened embeddings, so
    ``embedding_consumer()`` is None.
    """

    config_class = AttentionalFMConfig

    def __init__(
        self, schema: FeatureSchema, config: AttentionalFMConfig, embedding: FieldEmbedding | None = None
    ):
        super().__init__(schema, config, embedding)
        if self.num_fields < 2:
            raise ConfigError("attentional_fm needs at least 2 fields to form pairs")
        self.first_order = FirstOrder(schema, config.embedding_init_std)
        self.pooling = AttentionalPooling(
            config.embedding_dim, config.attention_dim, config.attention_dropout
        )
        self.dropout = nn.Dropout(config.dropout)
        self.projection = nn.Linear(config.embedding_dim, 1, bias=False)  # p

    def forward(self, batch: Batch) -> Tensor:
        emb = self.embedding(batch)  # [B, F, D]
        pooled = self.pooling(pairwise_products(emb))  # [B, P, D] -> [B, D]
        return self.first_order(batch) + self.projection(self.dropout(pooled)).squeeze(-1)
