"""MEC stage 1: any-size weighted sampling, whole-table dead codes, a budget that scales with
the table, per-field progress."""

from __future__ import annotations

import math

import pytest
import torch

from ctrzip.compression.mec.kmeans import _init_centroids, sample_by_weight, weighted_kmeans
from ctrzip.compression.mec.stage1 import (
    CodeLearningConfig,
    _assign_all,
    _Coder,
    _replace_dead,
    fit_codes,
    table_usage,
)
from ctrzip.progress import ProgressBars

from ._mec_data import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"batch_size": 64, "kmeans_iters": 5, "num_negatives": 4}


def test_sample_by_weight_follows_the_weights_and_skips_zero_weights():
    w = torch.tensor([0.0, 1.0, 3.0, 0.0, 6.0])
    draws = sample_by_weight(w, 200_000, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=5).double() / 200_000
    assert freq[0] == 0 and freq[3] == 0
    torch.testing.assert_close(freq, w.double() / w.sum(), atol=5e-3, rtol=0)
    # without replacement: distinct, positive weights before zero weights, heavier ids first more often
    first = torch.zeros(5)
    for seed in range(300):
        idx = sample_by_weight(w, 4, torch.Generator().manual_seed(seed), replacement=False)
        assert len(set(idx.tolist())) == 4 and set(idx[:3].tolist()) == {1, 2, 4}
        first[idx[0]] += 1
    assert first[4] > first[2] > first[1] > 0  # Efraimidis-Spirakis: P(first = j) = w_j / sum w
    assert abs(first[4] / 300 - 0.6) < 0.1


def test_sample_by_weight_refuses_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        sample_by_weight(torch.tensor([1.0, -1.0]), 3)
    with pytest.raises(ValueError, match="sum to 0"):
        sample_by_weight(torch.zeros(3), 3)
    with pytest.raises(ValueError, match="3 distinct rows out of 2"):
        sample_by_weight(torch.ones(2), 3, replacement=False)


def test_sampling_and_kmeans_init_work_beyond_2_pow_24_rows():
    """torch.multinomial stops at 2^24 categories; real Criteo fields reach 10M ids."""
    n = 2**24 + 64
    w = torch.zeros(n)
    w[-64:] = 1.0  # all the mass beyond index 2^24
    with pytest.raises(RuntimeError):
        torch.multinomial(w, 1)
    draws = sample_by_weight(w, 1000, torch.Generator().manual_seed(0))
    assert int(draws.min()) >= 2**24 and int(draws.max()) < n
    x = (torch.arange(n) - 2**24).float().reshape(1, n, 1)  # exact in float32 at the top
    cent = _init_centroids(x, w.reshape(1, n), 16, torch.Generator().manual_seed(0))
    assert cent.shape == (1, 16, 1) and float(cent.min()) >= 0
    assert len(torch.unique(cent)) == 16  # distinct rows


def test_stage1_and_kmeans_never_call_multinomial(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.multinomial is limited to 2^24 categories")

    monkeypatch.setattr(torch, "multinomial", refuse)
    g = torch.Generator().manual_seed(0)
    x, counts = torch.randn(300, 4, generator=g), torch.randint(0, 50, (300,), generator=g)
    weighted_kmeans(x, 8, counts.float() + 1, iters=2)
    res = fit_codes(x, counts, 2, 8, CodeLearningConfig(**FAST, steps=3), seed=0)
    assert res.steps == 3


def _clustered(n_per=50, k=8, d=4, seed=0):
    """``k`` tight, far-apart clusters per sub-space: k-means uses every codeword."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 10
    x = centers.repeat_interleave(n_per, 0) + 0.01 * torch.randn(k * n_per, d, generator=g)
    return x, torch.full((k * n_per,), 5)


def test_dead_codes_are_those_no_row_of_the_table_uses():
    """A 4-row window cannot touch 8 codewords; none is dead while the table uses them all
    (each serves ~250 of 2,000 rows). The old window rule replaced 13 in 40 steps."""
    g = torch.Generator().manual_seed(0)
    x, counts = torch.randn(2000, 2, generator=g), torch.full((2000,), 5)
    cfg = CodeLearningConfig(
        **{**FAST, "batch_size": 4}, steps=40, dead_code_steps=1, encoder="identity", alpha=0.0, beta=0.0
    )
    res = fit_codes(x, counts, 1, 8, cfg, seed=0)
    assert res.history[-1]["revived"] == 0
    assert torch.bincount(res.codes[:, 0], minlength=8).min() > 100


def test_table_usage_counts_every_row_and_dead_words_move_onto_targets():
    x, _ = _clustered(k=4, d=2)
    books = torch.stack([x[0], x[50], x[100], torch.tensor([1e4, 1e4])])[None]  # [1, 4, 2]
    coder = _Coder(2, books, linear=False)
    cfg = CodeLearningConfig(encoder="identity")
    usage = table_usage(coder, x, 4, cfg)
    codes, _ = _assign_all(coder, x, "pq", 0)
    assert torch.equal(usage[0], torch.bincount(codes[:, 0], minlength=4).float())  # brute force
    assert usage[0, 3] == 0 and usage[0, :3].min() > 0
    targets = x[:10].reshape(10, 1, 2)
    assert _replace_dead(coder, usage, targets, torch.Generator().manual_seed(0)) == 1
    moved = coder.books.detach()[0, 3]
    assert any(torch.equal(moved, targets[j, 0]) for j in range(10))
    assert torch.equal(coder.books.detach()[0, :3], books[0, :3])  # the used ones stay


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (100, (50, 100)),
        (1_462, (50, 256)),
        (4_000, (50, 400)),
        (100_000, (123, 4_096)),
        (10**7, (12_208, 4_096)),
    ],
)
def test_budget_is_passes_over_the_table_with_a_minimum(rows, expected):
    cfg = CodeLearningConfig()
    assert cfg.budget(rows) == expected
    steps, batch = expected
    assert steps == max(cfg.min_steps, math.ceil(cfg.epochs * rows / batch))
    passes = steps * batch / rows  # the cost in passes over the table: about `epochs`, never 50
    assert cfg.epochs <= passes < 2 * cfg.epochs or batch == min(rows, 256)
    full = min(rows, 4096)
    assert CodeLearningConfig(steps=7).budget(rows) == (7, full)
    assert CodeLearningConfig(epochs=0).budget(rows) == (0, full)


def test_budget_settings_that_conflict_are_refused_and_the_result_says_what_ran():
    with pytest.raises(ValueError, match="steps .* or epochs/min_steps"):
        CodeLearningConfig(steps=10, epochs=2.0)
    with pytest.raises(ValueError, match="steps .* or epochs/min_steps"):
        CodeLearningConfig(steps=10, min_steps=3)
    g = torch.Generator().manual_seed(0)
    x, counts = torch.randn(300, 4, generator=g), torch.randint(0, 50, (300,), generator=g)
    res = fit_codes(x, counts, 2, 8, CodeLearningConfig(**FAST, epochs=2.0, min_steps=3), seed=0)
    assert (res.steps, res.batch_size) == (10, 64)  # ceil(2 * 300 / 64)
    assert res.history[-1]["step"] == 10 and res.summary()["steps"] == 10
    with pytest.raises(ValueError, match="select_every needs a score"):
        fit_codes(x, counts, 2, 8, CodeLearningConfig(**FAST, steps=3, select_every=2))


def test_fit_codes_draws_a_progress_bar_per_field(capsys):
    g = torch.Generator().manual_seed(0)
    x, counts = torch.randn(200, 4, generator=g), torch.randint(0, 50, (200,), generator=g)
    with ProgressBars(True) as bars:
        fit_codes(x, counts, 2, 8, CodeLearningConfig(**FAST, steps=5), bars=bars, label="stage 1 C13")
    err = capsys.readouterr().err
    assert "stage 1 C13" in err and "5/5" in err and "eta" in err
