"""Embedding tables and the per-field embedding module."""

# registers BandedTable and the baseline tables, so artifacts can rebuild them
from ctrzip.nn.embedding import banded, cce, dhe, hashed, mixed_dim, pruned, qr  # noqa: F401
from ctrzip.nn.embedding.base import DenseTable, EmbeddingTable
from ctrzip.nn.embedding.field import FieldEmbedding

__all__ = ["DenseTable", "EmbeddingTable", "FieldEmbedding"]
