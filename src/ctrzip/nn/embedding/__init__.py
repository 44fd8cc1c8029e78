"""Embedding tables and the per-field embedding module."""

from ctrzip.nn.embedding import banded  # noqa: F401  (registers BandedTable, so artifacts can rebuild it)
from ctrzip.nn.embedding.base import DenseTable, EmbeddingTable
from ctrzip.nn.embedding.field import FieldEmbedding

__all__ = ["DenseTable", "EmbeddingTable", "FieldEmbedding"]
