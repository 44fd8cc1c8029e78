"""Inner-product neural network, IPNN (Qu et al., ICDM 2016).

The product layer feeds the MLP both the raw field vectors (the paper's l_z signal)
and every pairwise inner product (l_p), so the first hidden layer sees explicit
second-order interactions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.models._tower import TowerConfig, make_tower
from ctrzip.models.base import CTRModel, register_model
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.product import inner_products, num_pairs


@dataclass
class PNNConfig(TowerConfig):
    """Only the tower options; the MEC paper's setting is ``mlp=(300, 300, 300)``."""

    mlp: tuple[int, ...] = (300, 300, 300)


@register_model("pnn")
class PNN(CTRModel):
    """logit = MLP([flatten(e), <e_i, e_j> for i < j]).

    The tower input begins with exactly ``flatten(e)`` (F*D columns, field order) and
    the P = F(F-1)/2 inner products follow, so the first Linear is an embedding
    consumer and a per-field projection can be folded into its first F*D columns.
    """

    config_class = PNNConfig

    def __init__(self, schema: FeatureSchema, config: PNNConfig, embedding: FieldEmbedding | None = None):
        super().__init__(schema, config, embedding)
        self.mlp = make_tower(self.embedding.output_dim + num_pairs(self.num_fields), config)

    def forward(self, batch: Batch) -> Tensor:
        emb = self.embedding(batch)  # [B, F, D]
        x = torch.cat([emb.flatten(1), inner_products(emb)], dim=1)  # [B, F*D + P]
        return self.mlp(x).squeeze(-1)

    def embedding_consumer(self) -> str | None:
        return "mlp.layers.0"
