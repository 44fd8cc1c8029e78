"""Checks run before training or evaluation starts, so bad input fails at once and by name.

Each raises ``TrainingError`` (a ``UserError``: one ``error:`` line on the command line)
naming the split or setting at fault and what to do about it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ctrzip.data.dataset import SplitArrays
from ctrzip.errors import TrainingError


def split_labels(data: Any) -> np.ndarray | None:
    """The label array ``[N]`` behind a split or ``BatchLoader`` (None for other iterables)."""
    if isinstance(data, SplitArrays):
        return data.label
    split = getattr(data, "split", None)
    return split.label if isinstance(split, SplitArrays) else None


def check_rows(data: Any, name: str) -> None:
    """Raise if ``data`` (split, loader or sized iterable of batches) holds no rows."""
    labels = split_labels(data)
    empty = len(labels) == 0 if labels is not None else (hasattr(data, "__len__") and len(data) == 0)
    if empty:
        raise TrainingError(
            f"{name} has no rows (were they all skipped as bad rows when encoding?); "
            "re-encode the data so every split holds rows"
        )


def check_both_classes(data: Any, name: str) -> None:
    """Raise unless ``data`` has rows with label 0 and rows with label 1 (AUC needs both).

    Splits and ``BatchLoader``s are checked from their label array (one pass, no model);
    other iterables of batches are not checked here (``evaluate`` checks what it saw).
    """
    check_rows(data, name)
    labels = split_labels(data)
    if labels is not None:
        check_labels(np.asarray(labels), name)


def check_labels(labels: np.ndarray, name: str) -> None:
    """Raise unless the 0/1 ``labels`` ``[N]`` hold both classes."""
    n = int(labels.size)
    if n == 0:
        raise TrainingError(f"{name} has no rows; AUC and logloss need at least one click and one non-click")
    lo, hi = float(labels.min()), float(labels.max())
    if lo == hi:
        kind = "clicks (label 1)" if lo == 1 else "non-clicks (label 0)" if lo == 0 else f"label {lo:g}"
        raise TrainingError(
            f"{name} has only {kind} in its {n} rows; AUC needs both classes: "
            "re-split the data (or use more rows) so the split holds clicks and non-clicks"
        )


def has_batch_norm(model: nn.Module) -> bool:
    """True if ``model`` contains a BatchNorm layer (needs >= 2 rows per training batch)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def nonfinite_tensors(model: nn.Module, limit: int = 3) -> list[str]:
    """Names of up to ``limit`` parameters / floating buffers holding NaN or inf (one sync)."""
    named = [
        (name, t)
        for name, t in [*model.named_parameters(), *model.named_buffers()]
        if t.is_floating_point() and t.numel()
    ]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(t.detach()).all() for _, t in named]).cpu()
    return [name for (name, _), good in zip(named, ok.tolist(), strict=True) if not good][:limit]


def check_device(device: str | torch.device, setting: str) -> torch.device:
    """Resolve ``device`` (``auto`` -> CUDA if available) and refuse one this machine lacks.

    Raises:
        TrainingError: naming ``setting``, for an unknown device string or CUDA without CUDA.
    """
    from ctrzip.config import ConfigError
    from ctrzip.data.loader import resolve_device

    try:  # one rule for device names and availability: resolve_device's
        return resolve_device(device)
    except ConfigError as err:
        raise TrainingError(f"{setting}: {err}") from None
