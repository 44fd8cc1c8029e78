"""auc / logloss against scikit-learn on tie-heavy random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from ctrzip.train.metrics import auc, logloss


@pytest.mark.parametrize("n", [2, 7, 100, 5000, 200_000])
@pytest.mark.parametrize("levels", [3, 50, None])
def test_auc_matches_sklearn_with_ties(n: int, levels: int | None) -> None:
    rng = np.random.default_rng(n + (levels or 0))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]  # both classes present
    s = rng.integers(0, levels, n).astype(np.float64) if levels else rng.standard_normal(n)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-6)


def test_auc_accepts_torch_and_is_order_invariant() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1000)
    s = rng.integers(0, 10, 1000).astype(np.float32)
    ref = roc_auc_score(y, s)
    assert auc(torch.from_numpy(y), torch.from_numpy(s)) == pytest.approx(ref, abs=1e-6)
    perm = rng.permutation(1000)
    assert auc(y[perm], s[perm]) == pytest.approx(ref, abs=1e-12)
    # monotone transform of the scores leaves AUC unchanged; reversing them mirrors it
    assert auc(y, 1 / (1 + np.exp(-s))) == pytest.approx(ref, abs=1e-12)
    assert auc(y, -s) == pytest.approx(1 - ref, abs=1e-12)


def test_auc_all_tied_is_half() -> None:
    assert auc([0, 1, 1, 0, 1], [0.3] * 5) == pytest.approx(0.5)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0]])
def test_auc_one_class_raises(labels: list[int]) -> None:
    with pytest.raises(ValueError, match="one class"):
        auc(labels, np.linspace(0, 1, len(labels)))


def test_auc_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="values"):
        auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="only 0 and 1"):
        auc([0, 2], [0.1, 0.2])


@pytest.mark.parametrize("n", [10, 10_000])
def test_logloss_matches_sklearn(n: int) -> None:
    rng = np.random.default_rng(n)
    y = rng.integers(0, 2, n)
    p = rng.uniform(0.01, 0.99, n)
    assert logloss(y, p) == pytest.approx(log_loss(y, p, labels=[0, 1]), rel=1e-10)


def test_logloss_clips_and_rejects_logits() -> None:
    # a confident wrong prediction is finite: -log(eps)
    assert logloss([1], [0.0], eps=1e-7) == pytest.approx(-np.log(1e-7))
    with pytest.raises(ValueError, match="probabilities"):
        logloss([0, 1], [-2.0, 3.0])
