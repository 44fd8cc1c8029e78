"""AFN (Cheng et al., AAAI 2020): "Adaptive Factorization Network: Learning Adaptive-Order Feature
Interactions"."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctrzip.config import ConfigError
from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.models._tower import TowerConfig, check_positive, make_tower
from ctrzip.models.base import CTRModel, register_model
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.log_transform import LogTransform


@dataclass
class AFNConfig(TowerConfig):
    """AFN options (defaults near BARS: 1200 log neurons, [400]x3 tower, no ensemble).

    ``ensemble_dnn`` turns AFN into AFN+: a DNN on ``flatten(e)`` whose logit is mixed with
    AFN's by a learned ``Linear(2, 1)``. Unlike the paper, the DNN shares ``self.embedding``
    (one embedding per model is what compression swaps).

    Args:
        log_neurons: L, logarithmic neurons.
        log_batch_norm: BatchNorm around the exp in the log-transform layer.
        mlp: hidden widths of the tower on the L*D log-neuron outputs.
        ensemble_dnn: add the AFN+ DNN.
        dnn: hidden widths of that DNN.
    """

    log_neurons: int = 1200
    log_batch_norm: bool = True
    ensemble_dnn: bool = False
    dnn: tuple[int, ...] = (400, 400, 400)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(log_neurons=self.log_neurons)
        if self.ensemble_dnn and not self.dnn:
            raise ConfigError("ensemble_dnn needs non-empty dnn widths")


@register_model("afn")
class AFN(CTRModel):
    """logit = MLP(flatten(LogTransform(e))); AFN+: Linear(2, 1) over that and DNN(flatten(e))."""

    config_class = AFNConfig

    def __init__(self, schema: FeatureSchema, config: AFNConfig, embedding: FieldEmbedding | None = None):
        super().__init__(schema, config, embedding)
        self.log_transform = LogTransform(self.num_fields, config.log_neurons, config.log_batch_norm)
        self.mlp = make_tower(config.log_neurons * config.embedding_dim, config, out_dim=1)
        if config.ensemble_dnn:
            self.dnn = make_tower(self.embedding.output_dim, config, out_dim=1, hidden=config.dnn)
            self.ensemble = nn.Linear(2, 1)
        else:
            self.dnn = None

    def forward(self, batch: Batch) -> Tensor:
        emb = self.embedding(batch)  # [B, F, D]
        afn = self.mlp(self.log_transform(emb).flatten(1))  # [B, 1]
        if self.dnn is None:
            return afn.squeeze(-1)
        dnn = self.dnn(emb.flatten(1))  # [B, 1]
        return self.ensemble(torch.cat([afn, dnn], dim=1)).squeeze(-1)

    def embedding_consumer(self) -> str | None:
        # AFN's own tower reads log-neuron outputs; only the AFN+ DNN reads flatten(e).
        return "dnn.layers.0" if self.dnn is not None else None
