"""Every embedding table type has a byte projection to a larger vocabulary (the bench records
and the demo's Criteo-projected column use it); the low-rank and TT rules against tables
built at that size."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import ctrzip.nn.embedding as emb_pkg
from ctrzip.compression.budget.projection import project_bytes, table_bytes_at
from ctrzip.compression.shrink import module_bytes
from ctrzip.nn.embedding.banded import BandedTable
from ctrzip.nn.embedding.base import DenseTable, EmbeddingTable
from ctrzip.nn.embedding.lowrank import LowRankTable
from ctrzip.nn.embedding.pq import PQTable, SharedCodesPQTable
from ctrzip.nn.embedding.rowwise import RowwiseQuantTable
from ctrzip.nn.embedding.tt import TTTable
from ctrzip.nn.swappable import SWAPPABLE

RULES_IN_PROJECTION = (DenseTable, PQTable, SharedCodesPQTable, RowwiseQuantTable, BandedTable)


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_subclasses(sub)}
    return out


def test_every_table_type_has_a_projection_rule() -> None:
    for mod in pkgutil.iter_modules(emb_pkg.__path__, "ctrzip.nn.embedding."):
        importlib.import_module(mod.name)
    missing = [
        c.__name__
        for c in _subclasses(EmbeddingTable)
        if c.__module__.startswith("ctrzip.")  # not the tables other tests define
        and c.__name__ in SWAPPABLE  # a stored type (not an export-only plain form)
        and c not in RULES_IN_PROJECTION
        and not callable(getattr(c, "bytes_at", None))
    ]
    assert missing == []


@pytest.mark.parametrize("rows", [1_000, 123_457])
def test_lowrank_rule_equals_a_table_of_that_size(rows: int) -> None:
    small = LowRankTable(300, 16, rank=4)
    assert table_bytes_at(small, 300) == module_bytes(small) == small.nbytes()
    assert table_bytes_at(small, rows) == LowRankTable(rows, 16, rank=4).nbytes()


@pytest.mark.parametrize(("rows", "rank"), [(5_000, 16), (1_000_003, 8), (50, 16)])
def test_tt_rule_equals_a_table_of_that_size(rows: int, rank: int) -> None:
    small = TTTable(700, 16, tt_rank=rank)
    assert table_bytes_at(small, 700) == module_bytes(small) == small.nbytes()
    assert table_bytes_at(small, rows) == TTTable(rows, 16, tt_rank=rank).nbytes()


def test_model_with_lowrank_and_tt_tables_projects() -> None:
    """Swapping two dense tables changes the projected model bytes by exactly the difference
    between those tables built at the projected vocabulary."""
    from conftest import make_schema

    from ctrzip.models.base import build_model
    from ctrzip.nn.swappable import replace_module

    schema = make_schema()
    model = build_model("deepfm", schema, {"embedding_dim": 4, "mlp": [8]}, seed=0)
    vocab = {f.name: f.vocab_size * 10 for f in schema.sparse_fields}
    before = project_bytes(model, vocab)
    replace_module(model, "embedding.tables.item", LowRankTable(120, 4, rank=2))
    replace_module(model, "embedding.tables.user", TTTable(50, 4, tt_rank=2))
    dense_at = lambda rows: rows * 4 * 4  # noqa: E731  (float32 rows of dim 4)
    expect = before + LowRankTable(1200, 4, rank=2).nbytes() - dense_at(1200)
    expect += TTTable(500, 4, tt_rank=2).nbytes() - dense_at(500)
    assert project_bytes(model, vocab) == expect
