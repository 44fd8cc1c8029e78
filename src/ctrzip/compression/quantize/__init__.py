"""Row-wise post-training quantization of embedding tables (fp16, int8, int4, int2).

Module ``method``: ``RowwiseConfig`` (method ``rowwise``) and its fixed-width presets
``FP16Config`` / ``Int8Config`` / ``Int4Config`` / ``Int2Config`` (methods ``fp16``, ``int8``,
``int4``, ``int2``). The table is ``ctrzip.nn.embedding.rowwise.RowwiseQuantTable``.
Module ``linear``: ``LinearInt8Config`` (method ``linear_int8``), int8 weight-only Linear layers
of the dense network (``ctrzip.nn.int8_linear.Int8Linear``).
"""

from ctrzip.compression.quantize.linear import LinearInt8Config
from ctrzip.compression.quantize.method import (
    FP16Config,
    Int2Config,
    Int4Config,
    Int8Config,
    RowwiseConfig,
)

__all__ = ["FP16Config", "Int2Config", "Int4Config", "Int8Config", "LinearInt8Config", "RowwiseConfig"]
