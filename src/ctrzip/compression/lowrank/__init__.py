"""Low-rank factorizations of MLP layers and embedding tables.

Modules: ``feature_mimicking`` (``LowRankConfig``: PCA of layer *outputs*, Wang et al.),
``svd`` (``SVDConfig``: weight SVD baseline), ``tt`` (``TTConfig``: Tensor-Train tables),
``factorized`` (the shared method driver and fine-tune), ``fold`` (merging an embedding
projection into the first MLP layer).
"""

from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
from ctrzip.compression.lowrank.svd import SVDConfig
from ctrzip.compression.lowrank.tt import TTConfig

__all__ = ["LowRankConfig", "SVDConfig", "TTConfig"]
