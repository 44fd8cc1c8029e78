"""Logistic regression: the first-order baseline every CTR paper reports."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctrzip.config import ConfigError
from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.models.base import CTRModel, ModelConfig, register_model
from ctrzip.nn.embedding.field import FieldEmbedding


@dataclass
class LRConfig(ModelConfig):
    """LR has no options of its own; ``embedding_dim`` is fixed at 1 (the weights)."""

    embedding_dim: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embedding_dim != 1:
            raise ConfigError(
                f"lr's weights are its embedding, so embedding_dim must be 1, got {self.embedding_dim}"
            )


@register_model("lr")
class LR(CTRModel):
    """logit = bias + sum of one scalar weight per active feature.

    The per-feature weights ARE ``self.embedding`` (a dim-1 ``FieldEmbedding``), not a
    separate ``FirstOrder`` module: that keeps the required ``embedding`` attribute
    without an unused D-dim table. Compression methods that act on ``model.embedding``
    therefore act on the LR weights; ``embedding_consumer()`` is None (no Linear).
    """

    config_class = LRConfig

    def __init__(self, schema: FeatureSchema, config: LRConfig, embedding: FieldEmbedding | None = None):
        super().__init__(schema, config, embedding)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> Tensor:
        return self.embedding(batch).sum(dim=(1, 2)) + self.bias  # [B]
