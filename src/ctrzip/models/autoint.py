"""AutoInt (Song et al., CIKM 2019 "AutoInt: Automatic Feature Interaction Learning via Self-Attention")."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.models._tower import TowerConfig, check_positive, make_tower
from ctrzip.models.base import CTRModel, register_model
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.self_attention import InteractingStack


@dataclass
class AutoIntConfig(TowerConfig):
    """AutoInt options. Attention defaults are the paper's (3 layers, 2 heads, d'=32, residual,
    no scaling). ``mlp`` defaults to a [400]x3 DNN, i.e. AutoInt+ as benchmarked in BARS; set
    ``mlp: []`` for the plain AutoInt of the paper.

    Args:
        attention_layers: interacting layers.
        num_heads: heads per layer.
        attention_dim: d', width of each head.
        use_residual: residual projection in every layer.
        use_scale: scale scores by ``1/sqrt(d')``.
        layer_norm: LayerNorm after each layer.
    """

    attention_layers: int = 3
    num_heads: int = 2
    attention_dim: int = 32
    use_residual: bool = True
    use_scale: bool = False
    layer_norm: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(
            attention_layers=self.attention_layers, num_heads=self.num_heads, attention_dim=self.attention_dim
        )


@register_model("autoint")
class AutoInt(CTRModel):
    """logit = Linear(flatten(InteractingStack(e))) [+ MLP(flatten(e)) for AutoInt+]."""

    config_class = AutoIntConfig

    def __init__(self, schema: FeatureSchema, config: AutoIntConfig, embedding: FieldEmbedding | None = None):
        super().__init__(schema, config, embedding)
        self.attention = InteractingStack(
            config.embedding_dim,
            num_layers=config.attention_layers,
            head_dim=config.attention_dim,
            num_heads=config.num_heads,
            use_residual=config.use_residual,
            use_scale=config.use_scale,
            layer_norm=config.layer_norm,
        )
        self.head = nn.Linear(self.num_fields * self.attention.out_dim, 1)
        self.mlp = make_tower(self.embedding.output_dim, config, out_dim=1) if config.mlp else None

    def forward(self, batch: Batch) -> Tensor:
        emb = self.embedding(batch)  # [B, F, D]
        logit = self.head(self.attention(emb).flatten(1)).squeeze(-1)  # [B]
        if self.mlp is not None:
            logit = logit + self.mlp(emb.flatten(1)).squeeze(-1)
        return logit

    def embedding_consumer(self) -> str | None:
        return "mlp.layers.0" if self.mlp is not None else None
