"""DeepFM (Guo et al., IJCAI 2017): FM and a deep tower sharing one embedding."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.models.base import CTRModel, ModelConfig, register_model
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.interactions import FirstOrder, fm_pairwise
from ctrzip.nn.mlp import MLP


@dataclass
class DeepFMConfig(ModelConfig):
    """Args: mlp: hidden widths; dropout, batch_norm, activation: of the tower."""

    mlp: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.0
    batch_norm: bool = False
    activation: str = "relu"


@register_model("deepfm")
class DeepFM(CTRModel):
    """logit = first order + FM(e) + MLP(flatten(e))."""

    config_class = DeepFMConfig

    def __init__(self, schema: FeatureSchema, config: DeepFMConfig, embedding: FieldEmbedding | None = None):
        super().__init__(schema, config, embedding)
        self.first_order = FirstOrder(schema, config.embedding_init_std)
        self.mlp = MLP(
            self.embedding.output_dim,
            config.mlp,
            out_dim=1,
            activation=config.activation,
            dropout=config.dropout,
            batch_norm=config.batch_norm,
        )

    def forward(self, batch: Batch) -> Tensor:
        emb = self.embedding(batch)  # [B, F, D]
        deep = self.mlp(emb.flatten(1)).squeeze(-1)  # [B]
        return self.first_order(batch) + fm_pairwise(emb) + deep

    def embedding_consumer(self) -> str | None:
        return "mlp.layers.0"
