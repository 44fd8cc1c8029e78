"""HashedTable (the hashing trick): a dense table when every id has its own bucket, buckets
and fits against independent computations, bytes, gradients, bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.hashed import PRIME, HashedTable
from ctrzip.nn.swappable import SWAPPABLE

V, D = 60, 8


def _weight(seed: int = 0) -> torch.Tensor:
    w = torch.randn(V, D, generator=torch.Generator().manual_seed(seed))
    w[0] = 0
    return w


@pytest.mark.parametrize("buckets", [V, V + 7])
def test_identity_hash_with_enough_buckets_is_the_dense_table(buckets: int) -> None:
    w = _weight()
    table = HashedTable.from_dense(w, buckets, counts=np.arange(V) + 1, hash="identity")
    dense = DenseTable.from_tensor(w)
    ids = torch.tensor([[0, 5, 59], [3, 3, 1]])
    assert torch.equal(table(ids), dense(ids))
    assert torch.equal(table.materialize(), dense.materialize())


def test_universal_buckets_and_count_weighted_fit_match_an_independent_computation() -> None:
    w, b = _weight(1), 11
    counts = np.random.default_rng(0).integers(0, 5, V)
    table = HashedTable.from_dense(w, b, counts=counts, seed=3)
    a, c = table.a, table.b
    expected_bucket = [((a * i + c) % PRIME) % b for i in range(V)]  # Python ints: no overflow
    assert table.bucket(torch.arange(V)).tolist() == expected_bucket
    wn = w.double().numpy()
    for k in range(b):
        members = [i for i in range(1, V) if expected_bucket[i] == k]  # padding left out
        if not members:
            assert torch.equal(table.weight[k], torch.zeros(D))
            continue
        cw = counts[members].astype(float)
        want = (cw[:, None] * wn[members]).sum(0) / cw.sum() if cw.sum() > 0 else wn[members].mean(0)
        np.testing.assert_allclose(table.weight[k].detach().double().numpy(), want, rtol=1e-5, atol=1e-6)
    # ids sharing a bucket share a vector; padding is zero whatever its bucket holds
    rows = table.materialize()
    assert torch.equal(rows[0], torch.zeros(D))
    assert all(torch.equal(rows[i], table.weight[expected_bucket[i]]) for i in range(1, V))


def test_bytes_are_the_buckets_rows_only() -> None:
    table = HashedTable(V, D, 13)
    stored = sum(t.numel() * t.element_size() for t in table.state_dict().values())
    assert table.nbytes() == stored == HashedTable.bytes_for(13, D) == 13 * D * 4


def test_gradient_reaches_only_the_looked_up_buckets() -> None:
    table = HashedTable(V, D, 13, init_std=0.1)
    ids = torch.tensor([4, 9, 0])
    table(ids).pow(2).sum().backward()
    hit = set(table.bucket(ids[:2]).tolist())
    norms = table.weight.grad.abs().sum(1)
    assert {k for k in range(13) if norms[k] > 0} == hit


def test_spec_round_trip() -> None:
    table = HashedTable.from_dense(_weight(), 9, seed=5)
    clone = SWAPPABLE.get("HashedTable").empty(**table.spec())
    clone.load_state_dict(table.state_dict(), strict=True)
    ids = torch.randint(0, V, (4, 3))
    assert torch.equal(clone(ids), table(ids))


def test_bad_settings_raise_naming_the_setting() -> None:
    with pytest.raises(CompressionError, match="hashing: num_buckets must be >= 1, got 0"):
        HashedTable(V, D, 0)
    with pytest.raises(CompressionError, match="hashing: hash must be one of"):
        HashedTable(V, D, 4, hash="md5")
    with pytest.raises(CompressionError, match=r"hashing: counts must have shape \[60\]"):
        HashedTable.from_dense(_weight(), 4, counts=np.ones(3))
    with pytest.raises(IndexError, match=r"ids must lie in \[0, 60\), got \[0, 60\]"):
        HashedTable(V, D, 4)(torch.tensor([0, 60]))
