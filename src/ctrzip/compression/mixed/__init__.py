"""Mixed-precision embeddings by popularity with an explicit per-field band plan.

Module ``method``: ``MixedConfig`` (method ``mixed``). The table is
``ctrzip.nn.embedding.banded.BandedTable``; the plan format is ``ctrzip.nn.embedding.bands.BandSpec``.
"""

from ctrzip.compression.mixed.method import MixedConfig

__all__ = ["MixedConfig"]
