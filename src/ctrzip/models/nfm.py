"""Neural factorization machine (He & Chua, SIGIR 2017).

The bi-interaction pooling (FM's pairwise term kept as a D-vector) feeds an MLP,
so the deep part models higher-order interactions on top of the second-order ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ctrzip._utils import check_rate
from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.models._tower import TowerConfig, make_tower
from ctrzip.models.base import CTRModel, register_model
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.interactions import FirstOrder, fm_pairwise


@dataclass
class NFMConfig(TowerConfig):
    """Args (besides the tower's):
    interaction_batch_norm: BatchNorm1d on the bi-interaction vector (paper section 3.3).
    interaction_dropout: dropout on the bi-interaction vector (paper section 3.3).
    """

    mlp: tuple[int, ...] = (64, 64, 64)
    interaction_batch_norm: bool = False
    interaction_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_rate("interaction_dropout", self.interaction_dropout)


@register_model("nfm")
class NFM(CTRModel):
    """logit = first order + MLP(BN/dropout(sum_{i<j} e_i * e_j)).

    ``embedding_consumer()`` is None: the tower's first Linear reads the D-dim
    bi-interaction vector, never the flattened embeddings, so nothing can be folded.
    """

    config_class = NFMConfig

    def __init__(self, schema: FeatureSchema, config: NFMConfig, embedding: FieldEmbedding | None = None):
        super().__init__(schema, config, embedding)
        self.first_order = FirstOrder(schema, config.embedding_init_std)
        dim = config.embedding_dim
        self.interaction_norm = nn.BatchNorm1d(dim) if config.interaction_batch_norm else nn.Identity()
        self.interaction_dropout = nn.Dropout(config.interaction_dropout)
        self.mlp = make_tower(dim, config)

    def forward(self, batch: Batch) -> Tensor:
        emb = self.embedding(batch)  # [B, F, D]
        bi = fm_pairwise(emb, reduce=False)  # [B, D]
        bi = self.interaction_dropout(self.interaction_norm(bi))
        return self.first_order(batch) + self.mlp(bi).squeeze(-1)

    def embedding_consumer(self) -> str | None:
        return None
