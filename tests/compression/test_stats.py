"""RunningMoments, count-based table moments and PCA against independent numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctrzip.compression.stats import RunningMoments, choose_rank, pca, table_moments


def _chunks(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    offset = torch.linspace(-3, 5, 7)
    return [torch.randn(n, 7, generator=g) * 0.5 + offset for n in (5, 64, 1, 33)]


def test_streamed_moments_equal_numpy_on_concatenation() -> None:
    xs = _chunks()
    m = RunningMoments()
    for x in xs:
        m.update(x)
    y = np.concatenate([x.numpy().astype(np.float64) for x in xs])
    assert m.n == len(y)
    np.testing.assert_allclose(m.mean.numpy(), y.mean(0), rtol=1e-10)
    np.testing.assert_allclose(m.second_moment.numpy(), y.T @ y / len(y), rtol=1e-10)
    np.testing.assert_allclose(m.covariance().numpy(), np.cov(y.T, bias=True), rtol=1e-10, atol=1e-12)


def test_merge_equals_single_stream_and_state_dict_round_trip() -> None:
    xs = _chunks(1)
    whole, a, b = RunningMoments(), RunningMoments(), RunningMoments()
    for i, x in enumerate(xs):
        whole.update(x)
        (a if i % 2 else b).update(x)
    a.merge(b)
    assert a.n == whole.n
    torch.testing.assert_close(a.s2, whole.s2, rtol=1e-12, atol=1e-12)
    c = RunningMoments.from_state_dict(a.state_dict())
    torch.testing.assert_close(c.covariance(), whole.covariance(), rtol=1e-12, atol=1e-12)


def test_update_accepts_leading_dims_and_rejects_wrong_width() -> None:
    x = torch.randn(4, 3, 5)
    m = RunningMoments()
    m.update(x)
    assert m.n == 12
    with pytest.raises(ValueError, match="width"):
        m.update(torch.randn(2, 6))
    with pytest.raises(RuntimeError, match="no data"):
        _ = RunningMoments().mean


def test_table_moments_equal_lookup_pass() -> None:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(11, 4, generator=g)
    ids = torch.randint(0, 11, (500,), generator=g)
    counts = np.bincount(ids.numpy(), minlength=11)
    closed = table_moments(table, counts)
    streamed = RunningMoments()
    streamed.update(table[ids])
    assert closed.n == streamed.n
    torch.testing.assert_close(closed.covariance(), streamed.covariance(), rtol=1e-10, atol=1e-12)
    ignored = table_moments(table, counts, ignore_ids=(0,))
    assert ignored.n == int((ids != 0).sum())
    with pytest.raises(ValueError, match="rows"):
        table_moments(table, counts[:5])


def test_pca_matches_numpy_eig_with_canonical_signs() -> None:
    m = RunningMoments()
    for x in _chunks(2):
        m.update(x)
    res = pca(m)
    cov = m.covariance().numpy()
    w, v = np.linalg.eigh(cov)
    np.testing.assert_allclose(res.eigenvalues.numpy(), np.clip(w[::-1], 0, None), rtol=1e-9, atol=1e-12)
    # same subspace per eigenvector (up to sign), and signs canonical: u . mu >= 0
    for j in range(7):
        assert abs(abs(float(res.basis[:, j] @ torch.from_numpy(v[:, ::-1][:, j].copy()))) - 1) < 1e-8
    assert bool((res.basis.T @ res.mean >= 0).all())
    assert torch.all(res.energy[1:] >= res.energy[:-1]) and abs(float(res.energy[-1]) - 1) < 1e-12


def test_choose_rank_by_variance() -> None:
    m = RunningMoments()
    g = torch.Generator().manual_seed(3)
    m.update(torch.randn(400, 5, generator=g) * torch.tensor([10.0, 3.0, 1.0, 0.1, 0.01]))
    res = pca(m)
    k = choose_rank(res, None, 0.95)
    e = res.energy.numpy()
    assert e[k - 1] >= 0.95 and (k == 1 or e[k - 2] < 0.95)
    assert choose_rank(res, 3, None) == 3 and choose_rank(res, 99, None) == 5
    assert res.energy_report(2)["rank_for_energy"]["0.99"] == choose_rank(res, None, 0.99)
