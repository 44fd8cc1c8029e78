"""SAM (Cheng & Xue, SIGIR 2021 "Looking at CTR Prediction Again: Is Attention All You Need?")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from ctrzip.config import ConfigError
from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.models._tower import check_positive
from ctrzip.models.base import CTRModel, ModelConfig, register_model
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.sam import SAMInteraction


@dataclass
class SAMConfig(ModelConfig):
    """SAM options; default is SAM3A (all-pairs attention with field-pair weights, residual).

    Args:
        interaction: ``sam1``, ``sam2a``, ``sam2e``, ``sam3a`` or ``sam3e`` (see ``ctrzip.nn.sam``).
        num_layers: stacked type-3 layers.
        use_residual: residual projection in type-3 layers.
        aggregation: ``concat`` (flatten all outputs) or ``sum`` (sum over fields/pairs) before
            the Linear head.
        dropout: dropout on the interaction output.
    """

    interaction: Literal["sam1", "sam2a", "sam2e", "sam3a", "sam3e"] = "sam3a"
    num_layers: int = 3
    use_residual: bool = True
    aggregation: Literal["concat", "sum"] = "concat"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(num_layers=self.num_layers)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


@register_model("sam")
class SAM(CTRModel):
    """logit = Linear(aggregate(SAMInteraction(e)))."""

    config_class = SAMConfig
    config: SAMConfig

    def __init__(self, schema: FeatureSchema, config: SAMConfig, embedding: FieldEmbedding | None = None):
        super().__init__(schema, config, embedding)
        d = config.embedding_dim
        self.interaction = SAMInteraction(
            config.interaction, self.num_fields, d, config.num_layers, config.use_residual, config.dropout
        )
        width = self.interaction.num_outputs * d if config.aggregation == "concat" else d
        self.head = nn.Linear(width, 1)

    def forward(self, batch: Batch) -> Tensor:
        out = self.interaction(self.embedding(batch))  # [B, N, D]
        h = out.flatten(1) if self.config.aggregation == "concat" else out.sum(dim=1)
        return self.head(h).squeeze(-1)

    def embedding_consumer(self) -> str | None:
        # SAM1 + concat feeds flatten(e) straight into the head; every other variant mixes first.
        if (
            self.config.interaction == "sam1"
            and self.config.aggregation == "concat"
            and not self.config.dropout
        ):
            return "head"
        return None
