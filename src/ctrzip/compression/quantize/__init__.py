"""Row-wise post-training quantization of embedding tables (fp16, int8, int4, int2).

Module ``method``: ``RowwiseConfig`` (method ``rowwise``) and its fixed-width presets
``FP16Config`` / ``Int8Config`` / ``Int4Config`` / ``Int2Config`` (methods ``fp16``, ``int8``,
``int4``, ``int2``). The table is ``ctrzip.nn.embedding.rowwise.RowwiseQuantTable``.
"""

from ctrzip.compression.quantize.method import (
    FP16Config,
    Int2Config,
    Int4Config,
    Int8Config,
    RowwiseConfig,
)

__all__ = ["FP16Config", "Int2Config", "Int4Config", "Int8Config", "RowwiseConfig"]
