"""FiBiNet (Huang et al., RecSys 2019): "FiBiNET: Combining Feature Importance and Bilinear feature
Interaction"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ctrzip.config import ConfigError
from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.models._tower import TowerConfig, make_tower
from ctrzip.models.base import CTRModel, register_model
from ctrzip.nn.bilinear import BilinearInteraction
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.interactions import FirstOrder
from ctrzip.nn.senet import SENet


@dataclass
class FiBiNetConfig(TowerConfig):
    """FiBiNet options (defaults as the MEC reference run: [500]x3, field_interaction, ratio 3).

    Args:
        reduction_ratio: SENET bottleneck ratio r.
        bilinear_type: ``field_all``, ``field_each`` or ``field_interaction``.
    """

    mlp: tuple[int, ...] = (500, 500, 500)
    reduction_ratio: float = 3.0
    bilinear_type: Literal["field_all", "field_each", "field_interaction"] = "field_interaction"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reduction_ratio <= 0:
            raise ConfigError(f"reduction_ratio must be > 0, got {self.reduction_ratio}")


@register_model("fibinet")
class FiBiNet(CTRModel):
    """logit = first order + MLP([Bilinear(e), Bilinear(SENET(e))]).

    The MLP reads bilinear outputs, not the embeddings, so there is no embedding consumer
    and low-rank compression never folds into it.
    """

    config_class = FiBiNetConfig

    def __init__(self, schema: FeatureSchema, config: FiBiNetConfig, embedding: FieldEmbedding | None = None):
        super().__init__(schema, config, embedding)
        f, d = self.num_fields, config.embedding_dim
        self.first_order = FirstOrder(schema, config.embedding_init_std)
        self.senet = SENet(f, config.reduction_ratio)
        self.bilinear = BilinearInteraction(f, d, config.bilinear_type)
        self.bilinear_senet = BilinearInteraction(f, d, config.bilinear_type)  # separate W for SENET side
        self.mlp = make_tower(2 * self.bilinear.num_pairs * d, config, out_dim=1)

    def forward(self, batch: Batch) -> Tensor:
        emb = self.embedding(batch)  # [B, F, D]
        p = self.bilinear(emb)  # [B, P, D]
        q = self.bilinear_senet(self.senet(emb))  # [B, P, D]
        deep = self.mlp(torch.cat([p.flatten(1), q.flatten(1)], dim=1)).squeeze(-1)
        return self.first_order(batch) + deep

    def embedding_consumer(self) -> str | None:
        return None
