"""DCN (Wang et al., ADKDD 2017 "Deep & Cross Network for Ad Click Predictions")."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ctrzip.models._cross_base import CrossModel, CrossModelConfig
from ctrzip.models.base import register_model
from ctrzip.nn.cross import CrossNet


@dataclass
class DCNConfig(CrossModelConfig):
    """DCN options (paper: parallel cross net and DNN; ``stacked`` is an extra option).

    Args:
        mlp: DNN hidden widths (empty: cross net only).
        num_cross_layers: vector cross layers.
    """

    mlp: tuple[int, ...] = (400, 400, 400)


@register_model("dcn")
class DCN(CrossModel):
    """logit = Linear([CrossNet(x0), MLP(x0)]) with ``x0 = flatten(e)``."""

    config_class = DCNConfig

    def _make_cross(self, in_dim: int) -> nn.Module:
        return CrossNet(in_dim, self.config.num_cross_layers)
