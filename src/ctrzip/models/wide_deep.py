"""Wide & Deep (Cheng et al., DLRS 2016): a linear "wide" part trained jointly with an MLP."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.models._tower import TowerConfig, make_tower
from ctrzip.models.base import CTRModel, register_model
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.interactions import FirstOrder


@dataclass
class WideDeepConfig(TowerConfig):
    """Only the tower options (the wide part is the first-order term, no cross features)."""


@register_model("wide_deep")
class WideDeep(CTRModel):
    """logit = first order (wide) + MLP(flatten(e)) (deep)."""

    config_class = WideDeepConfig

    def __init__(
        self, schema: FeatureSchema, config: WideDeepConfig, embedding: FieldEmbedding | None = None
    ):
        super().__init__(schema, config, embedding)
        self.first_order = FirstOrder(schema, config.embedding_init_std)
        self.mlp = make_tower(self.embedding.output_dim, config)

    def forward(self, batch: Batch) -> Tensor:
        emb = self.embedding(batch, flatten=True)  # [B, F*D]
        return self.first_order(batch) + self.mlp(emb).squeeze(-1)

    def embedding_consumer(self) -> str | None:
        return "mlp.layers.0"
