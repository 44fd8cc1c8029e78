"""LowRankLinear / LowRankTable parity with the originals and with numpy PCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ctrzip.compression.stats import RunningMoments, pca, table_moments
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.lowrank import LowRankTable
from ctrzip.nn.lowrank_linear import LowRankLinear
from ctrzip.nn.swappable import SWAPPABLE


def _layer_and_inputs(seed: int = 0) -> tuple[nn.Linear, torch.Tensor]:
    torch.manual_seed(seed)
    lin = nn.Linear(12, 10)
    x = torch.randn(300, 12) + 1.0
    return lin, x


def _numpy_pca(y: np.ndarray, k: int) -> np.ndarray:
    """Independent PCA reconstruction mu + U_k U_k^T (y - mu), numpy float64."""
    mu = y.mean(0)
    w, v = np.linalg.eigh(np.cov(y.T, bias=True))
    u = v[:, np.argsort(w)[::-1][:k]]
    return mu + (y - mu) @ u @ u.T


@pytest.mark.parametrize("bias_form", ["centered", "paper"])
def test_full_rank_without_relu_reproduces_linear(bias_form: str) -> None:
    lin, x = _layer_and_inputs()
    m = RunningMoments()
    m.update(lin(x))
    res = pca(m)
    low = LowRankLinear.from_pca(lin, res.mean, res.basis, relu=False, bias_form=bias_form)
    assert (low.down.bias is None) == (bias_form == "paper")
    torch.testing.assert_close(low(x), lin(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("bias_form", ["centered", "paper"])
def test_rank_k_equals_numpy_pca_reconstruction(bias_form: str) -> None:
    lin, x = _layer_and_inputs(1)
    y = lin(x).detach()
    m = RunningMoments()
    m.update(y)
    res = pca(m)
    low = LowRankLinear.from_pca(lin, res.mean, res.basis[:, :4], bias_form=bias_form)
    ref = _numpy_pca(y.double().numpy(), 4)
    np.testing.assert_allclose(low(x).detach().double().numpy(), ref, atol=1e-5)


def test_relu_between_factors_uses_fresh_relu_and_clamps_codes() -> None:
    lin, x = _layer_and_inputs(2)
    m = RunningMoments()
    m.update(lin(x))
    res = pca(m)
    low = LowRankLinear.from_pca(lin, res.mean, res.basis[:, :3], relu=True)
    assert isinstance(low.act, nn.ReLU)
    codes = torch.relu(low.down(x))
    torch.testing.assert_close(low(x), low.up(codes))


def test_svd_factors_at_full_rank_reproduce_linear() -> None:
    lin, x = _layer_and_inputs(3)
    low = LowRankLinear.from_svd(lin, rank=10)
    torch.testing.assert_close(low(x), lin(x), atol=1e-5, rtol=0)
    w = lin.weight.detach().double()
    u, s, vh = torch.linalg.svd(w)
    best = (u[:, :3] * s[:3]) @ vh[:3]
    low3 = LowRankLinear.from_svd(lin, rank=3)
    torch.testing.assert_close((low3.up.weight @ low3.down.weight).double(), best, atol=1e-5, rtol=0)


def test_lowrank_linear_spec_round_trip() -> None:
    lin, x = _layer_and_inputs(4)
    low = LowRankLinear.from_svd(lin, rank=5, relu=True)
    clone = SWAPPABLE.get("LowRankLinear").empty(**low.spec())
    clone.load_state_dict(low.state_dict(), strict=True)
    torch.testing.assert_close(clone(x), low(x))
    with pytest.raises(ValueError, match="rank"):
        LowRankLinear(3, 3, 0)


def _trained_like_table(v: int = 40, d: int = 6, seed: int = 0) -> DenseTable:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(v, d, generator=g) @ torch.diag(torch.linspace(2, 0.1, d)) + 0.7
    w[0] = 0  # padding row
    return DenseTable.from_tensor(w)


def test_table_full_rank_reproduces_dense_table_and_padding_stays_zero() -> None:
    table = _trained_like_table()
    counts = np.arange(40) % 7
    res = pca(table_moments(table.materialize(), counts))
    ids = torch.tensor([[0, 3, 39], [5, 0, 1]])
    for form in ("centered", "paper"):
        low = LowRankTable.from_pca(table.materialize(), res.mean, res.basis, padding_idx=0, form=form)
        torch.testing.assert_close(low(ids), table(ids), atol=1e-5, rtol=0)
        torch.testing.assert_close(low.materialize(), table.materialize(), atol=1e-5, rtol=0)
        assert low(torch.tensor([0])).abs().max() == 0


def test_table_rank_k_equals_weighted_numpy_pca() -> None:
    table = _trained_like_table(seed=1)
    x = table.materialize().double().numpy()
    counts = (np.arange(40) * 13) % 9
    res = pca(table_moments(table.materialize(), counts))
    low = LowRankTable.from_pca(table.materialize(), res.mean, res.basis[:, :2], padding_idx=0)
    # independent: frequency-weighted mean/cov, projection of every row
    p = counts / counts.sum()
    mu = p @ x
    cov = (x - mu).T @ ((x - mu) * p[:, None])
    w, v = np.linalg.eigh(cov)
    u = v[:, np.argsort(w)[::-1][:2]]
    ref = mu + (x - mu) @ u @ u.T
    ref[0] = 0  # padding id keeps its zero vector
    np.testing.assert_allclose(low.materialize().double().numpy(), ref, atol=1e-5)
    assert low.nbytes() == 4 * (40 * 2 + 6 * 2 + 6) < table.nbytes()


def test_table_spec_round_trip_and_svd_init() -> None:
    table = _trained_like_table(seed=2)
    low = LowRankTable.from_svd(table.materialize(), rank=6)
    torch.testing.assert_close(low.materialize(), table.materialize(), atol=1e-5, rtol=0)
    clone = SWAPPABLE.get("LowRankTable").empty(**low.spec())
    clone.load_state_dict(low.state_dict(), strict=True)
    ids = torch.randint(0, 40, (7, 3))
    torch.testing.assert_close(clone(ids), low(ids))
