"""Product quantization of embedding tables: MEC (Yu et al., KDD 2024) and its baselines.

Modules: ``method`` (``MECConfig``, ``PQConfig``, named ``VARIANTS``; the registered methods),
``stage1`` (code learning: k-means init, popularity-weighted regularization, contrastive loss),
``stage2`` (the CTR model on the codes, fine-tune), ``losses``, ``kmeans``, ``diagnostics``,
``projection`` (bytes projected to the full Criteo/Avazu vocabulary).
"""

from ctrzip.compression.mec.method import VARIANTS, MECConfig, PQConfig

__all__ = ["VARIANTS", "MECConfig", "PQConfig"]
