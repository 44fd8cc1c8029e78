"""GDCN (Wang et al., CIKM 2023 "Towards Deeper, Lighter and Interpretable Cross Network for CTR")."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ctrzip.models._cross_base import CrossModel, CrossModelConfig
from ctrzip.models.base import register_model
from ctrzip.nn.cross import GatedCrossNet


@dataclass
class GDCNConfig(CrossModelConfig):
    """GDCN options: ``structure="parallel"`` is GDCN-P (default), ``"stacked"`` is GDCN-S.

    Defaults follow the MEC reference run: DNN [1024, 512, 256] beside 3 gated cross layers.
    The paper's field-level dimension optimization is not part of the model (it is a
    choice of per-field embedding sizes).

    Args:
        mlp: DNN hidden widths (empty: gated cross net only).
        num_cross_layers: gated cross layers.
    """

    mlp: tuple[int, ...] = (1024, 512, 256)


@register_model("gdcn")
class GDCN(CrossModel):
    """logit = head of GatedCrossNet and MLP on ``flatten(e)``, parallel (GDCN-P) or stacked (GDCN-S)."""

    config_class = GDCNConfig

    def _make_cross(self, in_dim: int) -> nn.Module:
        return GatedCrossNet(in_dim, self.config.num_cross_layers)
