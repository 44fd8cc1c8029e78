"""DCNv2 (Wang et al., WWW 2021 "DCN V2: Improved Deep & Cross Network")."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ctrzip.models._cross_base import CrossModel, CrossModelConfig
from ctrzip.models._tower import check_positive
from ctrzip.models.base import register_model
from ctrzip.nn.cross import CrossNetV2


@dataclass
class DCNv2Config(CrossModelConfig):
    """DCNv2 options; defaults follow BARS/FuxiCTR (parallel, 3 full-rank cross layers, [500]x3).

    Args:
        use_low_rank_mixture: use the paper's low-rank mixture of experts (DCN-Mix) per layer.
        low_rank: rank r of each expert.
        num_experts: experts per cross layer.
    """

    mlp: tuple[int, ...] = (500, 500, 500)
    use_low_rank_mixture: bool = False
    low_rank: int = 32
    num_experts: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(low_rank=self.low_rank, num_experts=self.num_experts)


@register_model("dcnv2")
class DCNv2(CrossModel):
    """logit = head of CrossNetV2 and MLP on ``flatten(e)``, parallel (default) or stacked."""

    config_class = DCNv2Config
    config: DCNv2Config

    def _make_cross(self, in_dim: int) -> nn.Module:
        cfg = self.config
        experts = cfg.num_experts if cfg.use_low_rank_mixture else None
        return CrossNetV2(in_dim, cfg.num_cross_layers, low_rank=cfg.low_rank, num_experts=experts)
