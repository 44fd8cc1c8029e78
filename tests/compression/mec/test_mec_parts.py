"""MEC building blocks against independent computations: k-means, assignment, losses,
negatives, first-order fit, diagnostics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ctrzip.compression.mec.diagnostics import code_diagnostics, popularity_bands
from ctrzip.compression.mec.kmeans import nearest, weighted_kmeans
from ctrzip.compression.mec.losses import (
    decode_codes,
    info_nce,
    popularity_weights,
    pwr_loss,
    quantize,
    semi_synthetic_negatives,
)
from ctrzip.compression.mec.stage2 import fit_additive

from ._mec_data import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_nearest_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(3, 500, 5, generator=g), torch.randn(3, 17, 5, generator=g)
    idx, dist = nearest(x, c, chunk=64)
    brute = torch.cdist(x.double(), c.double()).argmin(-1)
    assert torch.equal(idx, brute)
    torch.testing.assert_close(dist, (x - c.gather(1, idx.unsqueeze(-1).expand(-1, -1, 5))).pow(2).sum(-1))


def _numpy_weighted_lloyd(x, w, init, iters):
    c = init.copy()
    for _ in range(iters):
        a = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(len(c)):
            sel = a == j
            if w[sel].sum() > 0:
                c[j] = (w[sel, None] * x[sel]).sum(0) / w[sel].sum()
    a = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    return c, a


def test_weighted_kmeans_matches_numpy_and_decreases_objective():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(m, 0.5, (40, 2)) for m in (-3, 0, 3)]).astype(np.float32)
    w = rng.integers(1, 10, len(x)).astype(np.float32)
    init = x[[0, 50, 100, 5]].copy()
    res = weighted_kmeans(
        torch.from_numpy(x), 4, torch.from_numpy(w), iters=6, init=torch.from_numpy(init)[None]
    )
    c_ref, a_ref = _numpy_weighted_lloyd(
        x.astype(np.float64), w.astype(np.float64), init.astype(np.float64), 6
    )
    np.testing.assert_allclose(res.centroids[0].numpy(), c_ref, rtol=1e-5, atol=1e-5)
    assert np.array_equal(res.assign[0].numpy(), a_ref)
    obj = np.array(res.objective)
    assert np.all(np.diff(obj) <= 1e-3 * obj[0]) and obj[-1] < obj[0]
    # weights matter: a heavy point pulls its centroid
    w2 = np.ones(len(x), np.float32)
    w2[0] = 1000.0
    heavy = weighted_kmeans(torch.from_numpy(x), 3, torch.from_numpy(w2), iters=10, seed=0)
    c0 = heavy.centroids[0, heavy.assign[0, 0]]
    assert torch.dist(c0, torch.from_numpy(x[0])) < 0.1


def test_kmeans_more_clusters_than_points_and_bad_input():
    x = torch.randn(5, 3)
    res = weighted_kmeans(x, 8, iters=3)
    assert res.centroids.shape == (1, 8, 3) and res.objective[-1] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        weighted_kmeans(x, 2, weights=-torch.ones(5))


def test_pq_assignment_is_nearest_codeword_per_subspace():
    g = torch.Generator().manual_seed(2)
    s, books = torch.randn(64, 8, generator=g), torch.randn(4, 10, 2, generator=g)
    qz = quantize(s, books, "pq")
    for m in range(4):
        brute = torch.cdist(s[:, 2 * m : 2 * m + 2], books[m]).argmin(-1)
        assert torch.equal(qz.codes[:, m], brute)
    torch.testing.assert_close(qz.q, decode_codes(qz.codes, books, "pq"))


def test_rq_and_aq_codes():
    g = torch.Generator().manual_seed(3)
    s, books = torch.randn(200, 6, generator=g), torch.randn(3, 8, 6, generator=g)
    rq = quantize(s, books, "rq")
    first = torch.cdist(s, books[0]).argmin(-1)  # stage 1 of RQ quantizes s itself
    assert torch.equal(rq.codes[:, 0], first)
    res = s - books[0][first]
    assert torch.equal(rq.codes[:, 1], torch.cdist(res, books[1]).argmin(-1))
    aq = quantize(s, books, "aq", icm_iters=2)
    err_rq = (s - rq.q).pow(2).sum(-1)
    err_aq = (s - aq.q).pow(2).sum(-1)
    assert bool((err_aq <= err_rq + 1e-5).all())  # ICM starts at the RQ codes and never gets worse
    torch.testing.assert_close(aq.q, decode_codes(aq.codes, books, "aq"))


def test_popularity_weights():
    counts = np.array([0, 1, 2, 3, 4, 7, 8, 1000])
    assert popularity_weights(counts, "log2").tolist() == [1, 1, 1, 1, 2, 2, 3, 9]
    assert popularity_weights(counts, "count").tolist() == [1, 1, 2, 3, 4, 7, 8, 1000]
    assert popularity_weights(counts, "none").tolist() == [1.0] * 8


def test_pwr_loss_hand_computation_and_uniform_zero():
    dist = torch.tensor([[[0.0, 1.0, 4.0]], [[2.0, 0.5, 0.0]]])  # B=2, M=1, K=3
    w = torch.tensor([1.0, 3.0])
    a = np.exp(-dist.numpy()[:, 0] / 0.5)
    a /= a.sum(1, keepdims=True)
    p = (w.numpy()[:, None] * a).sum(0) / 4.0
    expect = math.log(3) + (p * np.log(p)).sum()
    assert float(pwr_loss(dist, tau=0.5, weights=w)) == pytest.approx(expect, rel=1e-5)
    uniform = torch.full((5, 2, 7), 3.0)
    assert float(pwr_loss(uniform)) == pytest.approx(0.0, abs=1e-6)
    d = dist.clone().requires_grad_(True)
    pwr_loss(d, tau=0.5).backward()
    assert d.grad is not None and d.grad.abs().sum() > 0  # unlike the reference code, it has a gradient


@pytest.mark.parametrize(("m", "rho"), [(4, 0.25), (8, 0.5), (2, 0.1)])
def test_negatives_differ_and_change_at_rate_rho(m, rho):
    g = torch.Generator().manual_seed(4)
    codes = torch.randint(0, 16, (2000, m), generator=g)
    neg = semi_synthetic_negatives(codes, 8, 16, rho, generator=g)
    assert neg.shape == (2000, 8, m) and int(neg.min()) >= 0 and int(neg.max()) < 16
    changed = (neg != codes.unsqueeze(1)).sum(-1).float()
    assert bool((changed >= 1).all())
    expected = rho * m + (1 - rho) ** m  # at least one change is forced
    assert float(changed.mean()) == pytest.approx(expected, rel=0.03)
    all_changed = semi_synthetic_negatives(codes, 2, 16, 1.0, generator=g)
    assert bool((all_changed != codes.unsqueeze(1)).all())


def test_info_nce_hand_computation():
    g = torch.Generator().manual_seed(5)
    s, q, z = (
        torch.randn(3, 4, generator=g),
        torch.randn(3, 4, generator=g),
        torch.randn(3, 2, 4, generator=g),
    )

    def cos(a, b):
        return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))

    sn, qn, zn = s.numpy(), q.numpy(), z.numpy()
    logits = np.concatenate([cos(sn, qn)[:, None], cos(sn[:, None], zn)], 1) / 0.2
    expect = np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0])
    assert float(info_nce(s, q, z, 0.2)) == pytest.approx(expect, rel=1e-5)


def test_fit_additive_recovers_representable_target():
    g = torch.Generator().manual_seed(6)
    codes = torch.randint(0, 5, (300, 3), generator=g)
    tables = torch.randn(3, 5, 1, generator=g)
    target = tables[torch.arange(3), codes].sum(1) + 0.7  # exactly additive
    t_hat, b_hat = fit_additive(codes, target, torch.rand(300, generator=g) + 0.5, 5, sweeps=60)
    pred = t_hat[torch.arange(3), codes].sum(1) + b_hat
    torch.testing.assert_close(pred, target, atol=1e-3, rtol=0)


def test_diagnostics_on_hand_example():
    codes = np.array([[0, 1], [0, 1], [1, 1], [2, 0]])  # ids 0 and 1 share their full code
    counts = np.array([100, 1, 5, 2])
    d = code_diagnostics(codes, counts, codebook_size=4, head_frac=0.25, tail_frac=0.5)
    assert d["all"]["usage"] == [0.75, 0.5]
    p0 = np.array([2, 1, 1]) / 4
    assert d["all"]["perplexity"][0] == pytest.approx(float(np.exp(-(p0 * np.log(p0)).sum())))
    assert d["all"]["collision_rate"] == 0.5 and d["distinct_codes"] == 3
    assert d["head"]["ids"] == 1 and d["head"]["collision_rate"] == 1.0  # id 0 (count 100)
    assert d["tail"]["ids"] == 2 and d["tail"]["collision_rate"] == 0.5  # ids 1 and 3
    bands = popularity_bands(counts, 0.25, 0.5)
    assert sorted(np.concatenate(list(bands.values())).tolist()) == [0, 1, 2, 3]
