"""MixedDimTable (mixed-dimension embeddings): dense at full dimensions, SVD fits at the
Eckart-Young error, the power-law rule against an independent search, bytes, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.mixed_dim import (
    MixedDimTable,
    block_bytes,
    block_popularity,
    geometric_edges,
    power_law_dims,
)
from ctrzip.nn.swappable import SWAPPABLE

V, D = 80, 8
EDGES = [0, 5, 20, V]


def _weight(seed: int = 0) -> torch.Tensor:
    w = torch.randn(V, D, generator=torch.Generator().manual_seed(seed))
    w[0] = 0
    return w


def test_full_dimensions_are_the_dense_table() -> None:
    w = _weight()
    table = MixedDimTable.from_dense(w, EDGES, [D, D, D])
    assert len(table.projections) == 0
    ids = torch.tensor([[0, 4, 5], [79, 19, 20]])
    assert torch.equal(table(ids), DenseTable.from_tensor(w)(ids))


def test_block_fits_reach_the_truncated_svd_error() -> None:
    w, dims = _weight(1), [8, 3, 1]
    table = MixedDimTable.from_dense(w, EDGES, dims)
    rows = table.materialize().double().numpy()
    wn = w.double().numpy()
    for k, (a, b) in enumerate(zip(EDGES, EDGES[1:], strict=False)):
        s = np.linalg.svd(wn[a:b], compute_uv=False)
        best = np.sqrt((s[dims[k] :] ** 2).sum())  # Eckart-Young: the least error at rank d_k
        np.testing.assert_allclose(np.linalg.norm(rows[a:b] - wn[a:b]), best, rtol=1e-5, atol=1e-6)


def test_bytes_match_the_formula_and_the_stored_tensors() -> None:
    table = MixedDimTable(V, D, EDGES, [8, 3, 1])
    stored = sum(t.numel() * t.element_size() for t in table.state_dict().values())
    by_hand = 4 * (5 * 8 + 15 * 3 + 60 * 1 + 3 * 8 + 1 * 8)  # rows, then the two projections
    assert table.nbytes() == stored == block_bytes(EDGES, [8, 3, 1], D) == by_hand


def test_popularity_and_the_power_law_rule() -> None:
    counts = np.random.default_rng(0).integers(0, 50, V)
    pop = block_popularity(counts, EDGES, padding_idx=0)
    want = [counts[1:5].sum() / 4, counts[5:20].sum() / 15, counts[20:].sum() / 60]
    np.testing.assert_allclose(pop, want)
    # d0 rule: the head block gets base_dim, the others floor(base_dim * (p_k / p_0) ** alpha)
    dims = power_law_dims(pop, EDGES, D, 0.5, base_dim=6)
    assert dims == [min(D, max(1, int(np.floor(6 * (p / pop[0]) ** 0.5 + 1e-9)))) for p in pop]
    assert power_law_dims(pop, EDGES, D, 0.0, base_dim=3) == [3, 3, 3]  # alpha 0: one dimension
    # budget rule: fits, and no larger scale on a fine grid fits with larger dimensions
    target = 1500
    dims = power_law_dims(pop, EDGES, D, 0.5, target_bytes=target)
    assert dims is not None and block_bytes(EDGES, dims, D) <= target
    for lam in np.geomspace(1e-3, 1e3, 4000):
        grid = [min(D, max(1, int(np.floor(lam * p**0.5 + 1e-9)))) for p in pop]
        if block_bytes(EDGES, grid, D) <= target:
            assert sum(grid) <= sum(dims), (grid, dims)
    assert power_law_dims(pop, EDGES, D, 0.5, target_bytes=100) is None  # even all-ones is bigger


def test_geometric_edges_tile_the_ids() -> None:
    assert geometric_edges(300, 4) == [0, 4, 17, 72, 300]
    assert geometric_edges(3, 4) == [0, 2, 3]
    assert geometric_edges(1000, 1) == [0, 1000]


def test_gradients_reach_rows_and_projections() -> None:
    table = MixedDimTable(V, D, EDGES, [8, 3, 1], init_std=0.1)
    table(torch.tensor([2, 7, 40, 0])).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in table.parameters())


def test_spec_round_trip() -> None:
    table = MixedDimTable.from_dense(_weight(), EDGES, [8, 2, 1])
    clone = SWAPPABLE.get("MixedDimTable").empty(**table.spec())
    clone.load_state_dict(table.state_dict(), strict=True)
    ids = torch.randint(0, V, (3, 4))
    assert torch.equal(clone(ids), table(ids))


def test_bad_settings_raise_naming_the_setting() -> None:
    with pytest.raises(CompressionError, match=r"mixed_dim: edges must run from 0 to V=80"):
        MixedDimTable(V, D, [0, 5, 70], [2, 2])
    with pytest.raises(CompressionError, match="mixed_dim: edges must be strictly increasing"):
        MixedDimTable(V, D, [0, 5, 5, V], [2, 2, 2])
    with pytest.raises(CompressionError, match=r"mixed_dim: block 1 dim must be in \[1, 8\], got 9"):
        MixedDimTable(V, D, EDGES, [2, 9, 1])
    with pytest.raises(CompressionError, match="mixed_dim: 3 blocks need as many dims"):
        MixedDimTable(V, D, EDGES, [2, 2])
    with pytest.raises(IndexError, match=r"ids must lie in \[0, 80\)"):
        MixedDimTable(V, D, EDGES, [2, 2, 2])(torch.tensor([80]))
