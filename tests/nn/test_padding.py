"""The padding id maps to an exact zero vector in every table type, before and after training
(issue 9, kind 3), and a padded sequence pools to the same vector as its real ids."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import ctrzip.compression  # noqa: F401  (registers every table type a method can swap in)
from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.nn.embedding.banded import BandedTable
from ctrzip.nn.embedding.bands import BandSpec
from ctrzip.nn.embedding.base import DenseTable, EmbeddingTable
from ctrzip.nn.embedding.cce import CCETable
from ctrzip.nn.embedding.dhe import DHETable
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.nn.embedding.hashed import HashedTable
from ctrzip.nn.embedding.lowrank import LowRankTable
from ctrzip.nn.embedding.mixed_dim import MixedDimTable
from ctrzip.nn.embedding.pq import PQTable, SharedCodesPQTable
from ctrzip.nn.embedding.pruned import PrunedTable
from ctrzip.nn.embedding.qr import QRTable
from ctrzip.nn.embedding.rowwise import RowwiseQuantTable
from ctrzip.nn.embedding.tt import TTTable
from ctrzip.nn.swappable import SWAPPABLE

V, D = 40, 8


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _pq(layout: str) -> PQTable:
    g = _gen()
    codes = torch.randint(0, 16, (V, 2), generator=g)
    width = D // 2 if layout == "concat" else D
    books = torch.randn(2, 16, width, generator=g)
    bias = torch.randn(D, generator=g) if layout == "additive" else None
    return PQTable.from_codebooks(codes, books, layout, bias=bias, dense_rows=torch.randn(1, D, generator=g))  # type: ignore[arg-type]


class _Shared(nn.Module):
    """A code table and a first-order table on its codes (as MEC builds them)."""

    def __init__(self) -> None:
        super().__init__()
        self.src = _pq("concat")
        g = _gen()
        self.first = SharedCodesPQTable.on(
            self.src, "src", torch.randn(2, 16, 1, generator=g), bias=torch.randn(1, generator=g)
        )


def _lowrank(form: str) -> LowRankTable:
    g = _gen()
    x = torch.randn(V, D, generator=g)
    x[0] = 0
    if form == "svd":
        return LowRankTable.from_svd(x, 3)
    mean = x[1:].mean(0)
    basis = torch.linalg.qr(torch.randn(D, 3, generator=g))[0]
    return LowRankTable.from_pca(x, mean, basis, form=form)


def _tt() -> TTTable:
    torch.manual_seed(0)
    return TTTable(V, D, tt_rank=4, init_std=0.5)


def _dense() -> DenseTable:
    torch.manual_seed(0)
    return DenseTable(V, D, init_std=0.5)


def _rowwise(bits: int) -> RowwiseQuantTable:
    x = torch.randn(V, D, generator=_gen()) + 2.0  # a non-zero stored padding row
    return RowwiseQuantTable.from_dense(x, bits)


def _banded() -> BandedTable:
    x = torch.randn(V, D, generator=_gen())
    plan = (BandSpec(0, 6, "float"), BandSpec(6, 14, "rowwise", {"bits": 8}),
            BandSpec(14, 30, "pq", {"M": 2, "K": 4}), BandSpec(30, V, "shared", {"S": 3}))  # fmt: skip
    return BandedTable.from_dense(x, None, plan)


def _baseline(kind: str) -> EmbeddingTable:
    """The table baselines, fitted to a table whose stored padding row is not zero."""
    x = torch.randn(V, D, generator=_gen()) + 1.0
    torch.manual_seed(0)
    if kind == "hashed":
        return HashedTable.from_dense(x, 7)
    if kind.startswith("qr"):
        return QRTable.from_dense(x, 6, combine=kind.split("_")[1])
    if kind == "mixed_dim":
        return MixedDimTable.from_dense(x, [0, 3, 12, V], [8, 4, 2])
    if kind == "cce":
        table = CCETable(V, D, num_chunks=2, codebook_size=5, init_std=1.0)
        with torch.no_grad():  # a clustering step: index and clustered rows set, hashed at zero
            table.set_clusters(
                torch.randint(0, 5, (V, 2), generator=_gen()), torch.randn(2, 5, D // 2, generator=_gen())
            )
            table.hashed.normal_()
        return table
    if kind == "dhe":
        table = DHETable(V, D, num_hashes=8, hidden=8)
        table.distill(x, steps=5, batch_size=64)
        return table
    return PrunedTable.from_dense(x, kind.split("_")[1], 60 if kind.endswith("element") else 9)


# name -> (holder module, the table under test inside it)
TABLES: dict[str, Callable[[], tuple[nn.Module, EmbeddingTable]]] = {
    "dense": lambda: (t := _dense(), t),
    "pq_concat": lambda: (t := _pq("concat"), t),
    "pq_additive": lambda: (t := _pq("additive"), t),
    "shared_codes_first_order": lambda: (h := _Shared(), h.first),
    "lowrank_centered": lambda: (t := _lowrank("centered"), t),
    "lowrank_paper": lambda: (t := _lowrank("paper"), t),
    "lowrank_svd": lambda: (t := _lowrank("svd"), t),
    "tt": lambda: (t := _tt(), t),
    "rowwise_fp16": lambda: (t := _rowwise(16), t),
    "rowwise_int8": lambda: (t := _rowwise(8), t),
    "rowwise_int4": lambda: (t := _rowwise(4), t),
    "banded": lambda: (t := _banded(), t),
    **{
        k: (lambda k=k: (t := _baseline(k), t))
        for k in ("hashed", "qr_mult", "qr_add", "mixed_dim", "dhe", "pruned_element", "pruned_row", "cce")
    },
}


def test_every_table_type_is_covered() -> None:
    covered = {type(TABLES[name]()[1]).__name__ for name in TABLES}
    registered = {n for n in SWAPPABLE if issubclass(SWAPPABLE.get(n), EmbeddingTable)}
    assert registered <= covered, f"add a padding case for {sorted(registered - covered)}"


def _train(holder: nn.Module, table: EmbeddingTable, steps: int = 15, lr: float = 0.5) -> None:
    """Large-lr Adam with weight decay on a loss that pulls every looked-up row (id 0 included)."""
    g = _gen()
    ids = torch.randint(0, V, (64, 3), generator=g)
    ids[:, 1:] = 0  # plenty of padding
    target = torch.randn(64, 3, table.embedding_dim, generator=g) + 1.0
    opt = torch.optim.Adam([p for p in holder.parameters() if p.requires_grad], lr=lr, weight_decay=0.1)
    for _ in range(steps):
        opt.zero_grad()
        loss = (table(ids) - target).pow(2).mean()
        loss.backward()
        opt.step()


def _assert_zero_padding(table: EmbeddingTable) -> None:
    zero = torch.zeros(1, table.embedding_dim)
    with torch.no_grad():
        assert torch.equal(table(torch.tensor([0])), zero)
        assert torch.equal(table(torch.tensor([0], dtype=torch.int32)), zero)
        assert torch.equal(table.materialize()[0:1], zero)


def _pooled(table: EmbeddingTable, rows: list[list[int]]) -> torch.Tensor:
    schema = FeatureSchema(fields=(FieldSpec("tags", "sequence", vocab_size=V, max_len=len(rows[0])),))
    fe = FieldEmbedding(schema, table.embedding_dim, tables={"tags": table})
    batch = Batch(torch.tensor(rows), torch.zeros(len(rows), 0), torch.zeros(len(rows)))
    with torch.no_grad():
        return fe(batch)[:, 0]


@pytest.mark.parametrize("name", list(TABLES))
def test_padding_row_is_exactly_zero_before_and_after_training(name: str) -> None:
    holder, table = TABLES[name]()
    _assert_zero_padding(table)
    before = table.materialize()[1:].clone()
    if any(p.requires_grad for p in holder.parameters()):  # frozen tables (row-wise) have none
        _train(holder, table)
        assert not torch.equal(table.materialize()[1:], before)  # training did move the real rows
    _assert_zero_padding(table)
    # padding does not change a sequence field's pooled vector
    pooled = _pooled(table, [[5, 0, 0], [0, 5, 0], [5, 5, 0], [0, 0, 0]])
    with torch.no_grad():
        five = table(torch.tensor([5]))[0]
    for row in pooled[:3]:
        torch.testing.assert_close(row, five, rtol=1e-6, atol=0)
    assert torch.equal(pooled[3], torch.zeros(table.embedding_dim))


@pytest.mark.parametrize("name", list(TABLES))
def test_padding_stays_zero_when_stored_rows_are_edited(name: str) -> None:
    """A loaded or hand-edited state cannot make id 0 non-zero: the mask is in the forward."""
    holder, table = TABLES[name]()
    with torch.no_grad():
        for p in holder.parameters():
            p.add_(torch.ones_like(p))
        for b in holder.buffers() if isinstance(table, RowwiseQuantTable) else []:  # its stored rows
            if b.dtype == torch.uint8:
                b.add_(1)
            elif b.is_floating_point():
                b.add_(torch.ones_like(b))
    _assert_zero_padding(table)


def test_dense_from_tensor_zeroes_the_padding_row() -> None:
    w = torch.ones(5, 3)
    t = DenseTable.from_tensor(w)
    assert torch.equal(t.weight[0], torch.zeros(3)) and torch.equal(t.weight[1:], w[1:])
    assert torch.equal(DenseTable.from_tensor(w, padding_idx=None).materialize(), w)


def test_lowrank_padding_row_gets_no_gradient() -> None:
    table = _lowrank("centered")
    table(torch.tensor([0, 0, 3])).sum().backward()
    assert torch.equal(table.weight.grad[0], torch.zeros(3))
    assert table.weight.grad[3].abs().sum() > 0
