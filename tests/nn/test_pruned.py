"""PrunedTable (magnitude pruning): no pruning is the dense table, the kept entries are the
largest, the sparse format's bytes against an independent count, gradients, bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.pruned import PrunedTable, max_kept, pruned_bytes
from ctrzip.nn.swappable import SWAPPABLE

V, D = 30, 8


def _weight(seed: int = 0, d: int = D) -> torch.Tensor:
    w = torch.randn(V, d, generator=torch.Generator().manual_seed(seed))
    w[0] = 5.0  # a large stored padding row must never be kept
    return w


@pytest.mark.parametrize("granularity", ["element", "row"])
def test_pruning_nothing_is_the_dense_table(granularity: str) -> None:
    w = _weight()
    table = PrunedTable.from_dense(w, granularity, V * D)  # capped at every non-padding entry
    assert table.kept == (V - 1) * (D if granularity == "element" else 1)
    dense = DenseTable.from_tensor(w)
    ids = torch.tensor([[0, 1, 29], [5, 5, 17]])
    assert torch.equal(table(ids), dense(ids))
    assert torch.equal(table.materialize(), dense.materialize())


def test_element_pruning_keeps_the_largest_magnitudes() -> None:
    w, kept = _weight(1), 50
    table = PrunedTable.from_dense(w, "element", kept)
    wn = w.numpy().copy()
    wn[0] = 0
    order = np.argsort(-np.abs(wn[1:]).ravel(), kind="stable")[:kept]
    want = np.zeros_like(wn[1:]).ravel()
    want[order] = wn[1:].ravel()[order]
    assert np.array_equal(table.materialize()[1:].numpy(), want.reshape(V - 1, D))
    # the CSR arrays themselves: rows' entry counts and column indices
    nz = want.reshape(V - 1, D) != 0
    assert table.row_ptr.tolist() == [0, 0, *np.cumsum(nz.sum(1)).tolist()]
    assert table.col_idx.tolist() == np.nonzero(nz)[1].tolist()


def test_row_pruning_keeps_the_largest_rows() -> None:
    w = _weight(2)
    table = PrunedTable.from_dense(w, "row", 7)
    norms = w[1:].norm(dim=1).numpy()
    keep = set((np.argsort(-norms, kind="stable")[:7] + 1).tolist())
    assert set(table.kept_ids.tolist()) == keep and table.kept_ids.tolist() == sorted(keep)
    rows = table.materialize()
    for i in range(V):
        assert torch.equal(rows[i], w[i] if i in keep else torch.zeros(D))


@pytest.mark.parametrize(("d", "col_bytes"), [(8, 1), (300, 2)])
def test_bytes_match_an_independent_count(d: int, col_bytes: int) -> None:
    w = _weight(3, d)
    for kept in (1, 40, 200):
        table = PrunedTable.from_dense(w, "element", kept)
        stored = sum(t.numel() * t.element_size() for t in table.state_dict().values())
        by_hand = 4 * (V + 1) + kept * (col_bytes + 4)  # int32 row_ptr, uint8/int16 col_idx, fp32 values
        assert table.nbytes() == stored == pruned_bytes(V, d, "element", kept) == by_hand
        assert max_kept(V, d, "element", by_hand) == kept
    rows = PrunedTable.from_dense(w, "row", 6)
    assert rows.nbytes() == 6 * 4 + 6 * d * 4 == pruned_bytes(V, d, "row", 6)
    assert max_kept(V, d, "row", 6 * 4 + 6 * d * 4 + 3) == 6


def test_gradient_reaches_only_the_kept_values() -> None:
    table = PrunedTable.from_dense(_weight(4), "element", 60)
    ids = torch.tensor([3, 11, 0])
    table(ids).sum().backward()
    grad = table.values.grad
    looked_up = set()
    for i in (3, 11):
        looked_up |= set(range(int(table.row_ptr[i]), int(table.row_ptr[i + 1])))
    assert {j for j in range(table.kept) if grad[j] != 0} == looked_up
    assert torch.all(grad[list(looked_up)] == 1.0)  # d(sum)/d(value) = 1 for each looked-up entry
    rows = PrunedTable.from_dense(_weight(4), "row", 5)
    rows(rows.kept_ids[:2].long()).sum().backward()
    assert rows.rows.grad[:2].abs().sum() > 0 and rows.rows.grad[2:].abs().sum() == 0


@pytest.mark.parametrize("granularity", ["element", "row"])
def test_spec_round_trip(granularity: str) -> None:
    table = PrunedTable.from_dense(_weight(5), granularity, 9)
    clone = SWAPPABLE.get("PrunedTable").empty(**table.spec())
    clone.load_state_dict(table.state_dict(), strict=True)
    ids = torch.randint(0, V, (3, 4))
    assert torch.equal(clone(ids), table(ids))


def test_bad_settings_raise_naming_the_setting() -> None:
    with pytest.raises(CompressionError, match="prune: granularity must be one of"):
        PrunedTable(V, D, "block", 3)
    with pytest.raises(CompressionError, match=r"prune: kept must be in \[0, 30\] for row pruning, got 31"):
        PrunedTable(V, D, "row", 31)
    with pytest.raises(IndexError, match=r"pruned table: ids must lie in \[0, 30\)"):
        PrunedTable(V, D, "row", 3)(torch.tensor([30]))
