"""Exact CTR metrics as pure functions on 1-D numpy arrays or torch tensors.

Why our own: the AUC must be exact and tie-aware (CTR models emit many equal scores,
e.g. after quantization), computed in float64 on tens of millions of rows without
sklearn's extra copies, and identical on every machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_1d(x: Any, name: str) -> np.ndarray:
    """Numpy float64 view of a 1-D array or tensor (moved to CPU)."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _check_pair(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _as_1d(y_true, "y_true")
    s = _as_1d(y_score, "y_score")
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but the scores have {s.size}")
    if y.size == 0:
        raise ValueError("empty input")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must contain only 0 and 1")
    return y, s


def auc(y_true: Any, y_score: Any) -> float:
    """Area under the ROC curve, exact with ties (Mann-Whitney U with average ranks).

    Sorts once (O(n log n)); a positive and a negative with equal scores count 1/2.

    Args:
        y_true: ``[N]`` 0/1 labels.
        y_score: ``[N]`` scores (logits or probabilities; only their order matters).

    Raises:
        ValueError: if only one class is present, or inputs are malformed.
    """
    y, s = _check_pair(y_true, y_score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC is undefined when only one class is present in y_true")
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    pos_sorted = y[order].astype(np.int64)
    # Tie groups: boundaries where the sorted score changes.
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    pos_in_group = np.add.reduceat(pos_sorted, starts)
    size_of_group = np.diff(np.r_[starts, y.size])
    neg_in_group = size_of_group - pos_in_group
    neg_below = np.cumsum(neg_in_group) - neg_in_group  # negatives with a strictly lower score
    wins = pos_in_group.astype(np.float64) * neg_below + 0.5 * pos_in_group * neg_in_group
    return float(wins.sum() / (float(n_pos) * float(n_neg)))


def logloss(y_true: Any, y_prob: Any, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities, clipped to ``[eps, 1 - eps]``.

    Args:
        y_true: ``[N]`` 0/1 labels.
        y_prob: ``[N]`` click probabilities.
        eps: clipping that keeps a confident wrong prediction finite.
    """
    y, p = _check_pair(y_true, y_prob)
    if (p < 0).any() or (p > 1).any():
        raise ValueError("y_prob must lie in [0, 1]; pass probabilities, not logits")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))
