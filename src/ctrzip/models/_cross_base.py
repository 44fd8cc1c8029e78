"""Wiring shared by the cross-network models (DCN, DCNv2, GDCN): cross net and MLP, parallel or stacked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.models._tower import TowerConfig, check_positive, make_tower
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.field import FieldEmbedding


@dataclass
class CrossModelConfig(TowerConfig):
    """Args: num_cross_layers: cross layers; structure: ``parallel`` (cross || MLP, concat ->
    head) or ``stacked`` (cross -> MLP -> head); mlp: hidden widths, empty for a cross-only model.
    """

    num_cross_layers: int = 3
    structure: Literal["parallel", "stacked"] = "parallel"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(num_cross_layers=self.num_cross_layers)


class CrossModel(CTRModel):
    """``x0 = flatten(e)``; logit = head([cross(x0), MLP(x0)]) or head(MLP(cross(x0))).

    Subclasses only say which cross network they use (``_make_cross``).
    """

    config_class = CrossModelConfig
    config: CrossModelConfig

    def __init__(
        self, schema: FeatureSchema, config: CrossModelConfig, embedding: FieldEmbedding | None = None
    ) -> None:
        super().__init__(schema, config, embedding)
        d = self.embedding.output_dim
        self.cross = self._make_cross(d)
        self.mlp = make_tower(d, config, out_dim=None) if config.mlp else None
        deep = self.mlp.out_dim if self.mlp is not None else 0
        head_in = d + deep if config.structure == "parallel" else deep or d
        self.head = nn.Linear(head_in, 1)

    def _make_cross(self, in_dim: int) -> nn.Module:
        raise NotImplementedError

    def forward(self, batch: Batch) -> Tensor:
        x0 = self.embedding(batch, flatten=True)  # [B, F*D]
        if self.config.structure == "parallel":
            parts = [self.cross(x0)]
            if self.mlp is not None:
                parts.append(self.mlp(x0))
            h = torch.cat(parts, dim=1)
        else:
            h = self.cross(x0)
            if self.mlp is not None:
                h = self.mlp(h)
        return self.head(h).squeeze(-1)

    def embedding_consumer(self) -> str | None:
        # Only the parallel tower reads flatten(e) directly; the stacked one reads the cross output.
        if self.config.structure == "parallel" and self.mlp is not None:
            return "mlp.layers.0"
        return None
