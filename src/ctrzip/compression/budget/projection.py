"""Bytes a compressed model would store over another vocabulary (e.g. Criteo's full one).

Why: at benchmark scale the tables are small and the network dominates, so a whole-model
ratio says little about real Criteo. The AUC is measured where we can afford it; the bytes
are projected with each table's own layout: per-id parts (rows, codes) scale with the id
count, codebooks, shared vectors and special rows do not, and the network is counted as
stored. A ``BandedTable`` keeps each band's share of the ids (one-id bands stay one id):
at a larger vocabulary the popular head is a *smaller* share of the ids, so this
overestimates the head's bytes (a conservative projection). A table with a ``bytes_at(rows)``
method (the table baselines: hashing, QR, mixed dimensions, DHE, pruning) states its own rule.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ctrzip.compression.shrink import module_bytes
from ctrzip.compression.sizes import stored_bytes
from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.banded import BandedTable
from ctrzip.nn.embedding.bands import BAND_KINDS
from ctrzip.nn.embedding.base import DenseTable, EmbeddingTable
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.embedding.pq import PQTable, SharedCodesPQTable
from ctrzip.nn.embedding.rowwise import RowwiseQuantTable, row_bytes


def _banded_at(table: BandedTable, rows: int) -> int:
    plan, v, d = table.plan, table.num_embeddings, table.embedding_dim
    singles = sum(1 for b in plan if b.end - b.start == 1)
    spread = max(v - singles, 1)
    total = 0
    for b in plan:
        n = b.end - b.start
        n_at = 1 if n == 1 else max(1, round(n * (rows - singles) / spread))
        kind = BAND_KINDS[b.representation]
        total += kind.bytes_for(n_at, d, **{**kind.defaults, **b.params})
    return total


def table_bytes_at(table: EmbeddingTable, rows: int) -> int:
    """Bytes ``table``'s representation would store for ``rows`` ids (``rows`` = its own
    ``num_embeddings`` gives its stored bytes).

    Raises:
        CompressionError: a table type with no projection rule (named).
    """
    d = table.embedding_dim
    if isinstance(table, SharedCodesPQTable):  # reads its source's codes: only its floats
        return module_bytes(table)
    if isinstance(table, PQTable):
        per_id = table.num_subspaces * table.codes.element_size()
        return module_bytes(table) - table.num_embeddings * per_id + rows * per_id
    if isinstance(table, RowwiseQuantTable):
        return rows * row_bytes(d, table.bits)
    if isinstance(table, BandedTable):
        return _banded_at(table, rows)
    if type(table) is DenseTable:
        return rows * d * table.weight.element_size()
    bytes_at = getattr(table, "bytes_at", None)  # the table baselines state their own rule
    if callable(bytes_at):
        return int(bytes_at(rows))
    raise CompressionError(f"no byte projection for {type(table).__name__} tables")


def project_bytes(model: nn.Module, vocab: Mapping[str, int]) -> int:
    """Stored bytes of ``model`` with every field's tables at ``vocab[field]`` ids.

    Args:
        model: a (possibly compressed) CTR model.
        vocab: field -> ids including padding and OOV (e.g. ``mec.projection.FULL_SCALE_VOCAB``).

    Raises:
        CompressionError: a field of the model is missing from ``vocab``, or a table type has
            no projection rule.
    """
    tables: list[tuple[str, EmbeddingTable]] = []
    for _, fe in model.named_modules():
        if isinstance(fe, FieldEmbedding):
            tables += list(fe.tables.items())  # type: ignore[arg-type]
    missing = sorted({name for name, _ in tables} - set(vocab))
    if missing:
        raise CompressionError(f"projection: no vocabulary size for fields {missing}")
    network = stored_bytes(model) - sum(module_bytes(t) for _, t in tables)
    return network + sum(table_bytes_at(t, vocab[name]) for name, t in tables)
