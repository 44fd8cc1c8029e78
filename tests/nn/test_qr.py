"""QRTable (quotient-remainder): dense-table special cases, lookups and fits against independent
computations, bytes, gradients, bad settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.qr import QRTable
from ctrzip.nn.swappable import SWAPPABLE

V, D = 50, 6


def _weight(seed: int = 0) -> torch.Tensor:
    w = torch.randn(V, D, generator=torch.Generator().manual_seed(seed))
    w[0] = 0
    return w


@pytest.mark.parametrize("combine", ["mult", "add"])
def test_one_quotient_row_at_the_combine_identity_is_a_dense_table(combine: str) -> None:
    w = _weight()
    table = QRTable(V, D, collisions=V, combine=combine)
    assert table.quotient.shape == (1, D)
    with torch.no_grad():
        table.quotient.fill_(1.0 if combine == "mult" else 0.0)
        table.remainder.copy_(w)
    dense = DenseTable.from_tensor(w)
    ids = torch.tensor([[0, 1, 49], [7, 7, 3]])
    assert torch.equal(table(ids), dense(ids))


@pytest.mark.parametrize("combine", ["mult", "add"])
def test_one_collision_from_a_trained_table_is_exact(combine: str) -> None:
    w = _weight(1)
    table = QRTable.from_dense(w, 1, counts=np.arange(V), combine=combine)
    torch.testing.assert_close(table.materialize(), w, rtol=0, atol=1e-6)


@pytest.mark.parametrize("combine", ["mult", "add"])
def test_lookup_and_fit_match_an_independent_computation(combine: str) -> None:
    w, c = _weight(2), 7
    counts = np.random.default_rng(1).integers(1, 9, V).astype(float)
    table = QRTable.from_dense(w, c, counts=counts, combine=combine)
    wn, q, r = (
        w.double().numpy(),
        table.quotient.detach().double().numpy(),
        table.remainder.detach().double().numpy(),
    )
    assert q.shape == (math.ceil(V / c), D) and r.shape == (c, D)
    for j in range(q.shape[0]):  # quotient rows: count-weighted means of their ids (padding out)
        ids = [i for i in range(1, V) if i // c == j]
        np.testing.assert_allclose(
            q[j], (counts[ids, None] * wn[ids]).sum(0) / counts[ids].sum(), rtol=1e-5, atol=1e-6
        )
    if combine == "mult":
        assert np.array_equal(r, np.ones((c, D)))
    else:  # remainder rows: count-weighted mean residual of their ids
        for k in range(c):
            ids = [i for i in range(1, V) if i % c == k]
            res = wn[ids] - q[[i // c for i in ids]]
            np.testing.assert_allclose(
                r[k], (counts[ids, None] * res).sum(0) / counts[ids].sum(), rtol=1e-5, atol=1e-6
            )
    out = table(torch.arange(V)).detach().double().numpy()
    want = np.stack([q[i // c] * r[i % c] if combine == "mult" else q[i // c] + r[i % c] for i in range(V)])
    want[0] = 0
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)


def test_bytes_match_the_formula_and_the_stored_tensors() -> None:
    for v, c in ((50, 7), (50, 1), (1000, 31), (7, 10)):
        table = QRTable(v, D, c)
        stored = sum(t.numel() * t.element_size() for t in table.state_dict().values())
        assert table.nbytes() == stored == QRTable.bytes_for(v, D, c) == (math.ceil(v / c) + c) * D * 4


def test_gradients_reach_both_tables() -> None:
    table = QRTable(V, D, 7, init_std=0.1)
    table(torch.tensor([3, 12, 0])).pow(2).sum().backward()
    assert table.quotient.grad[[0, 1]].abs().sum() > 0 and table.remainder.grad[[3, 5]].abs().sum() > 0
    assert table.quotient.grad[2:].abs().sum() == 0  # rows not looked up (id 0 is masked)


def test_spec_round_trip() -> None:
    table = QRTable.from_dense(_weight(), 5, combine="add")
    clone = SWAPPABLE.get("QRTable").empty(**table.spec())
    clone.load_state_dict(table.state_dict(), strict=True)
    ids = torch.randint(0, V, (3, 4))
    assert torch.equal(clone(ids), table(ids))


def test_bad_settings_raise_naming_the_setting() -> None:
    with pytest.raises(CompressionError, match="qr: collisions must be >= 1, got 0"):
        QRTable(V, D, 0)
    with pytest.raises(CompressionError, match="qr: combine must be one of"):
        QRTable(V, D, 4, combine="concat")
    with pytest.raises(IndexError, match=r"ids must lie in \[0, 50\)"):
        QRTable(V, D, 4)(torch.tensor([-1]))
