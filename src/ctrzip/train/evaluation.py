"""Inference loops: ``predict`` (probabilities) and ``evaluate`` (AUC, logloss)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from ctrzip.data.batch import Batch
from ctrzip.data.dataset import SplitArrays
from ctrzip.data.loader import BatchLoader
from ctrzip.errors import TrainingError
from ctrzip.train.checks import check_device, check_labels
from ctrzip.train.metrics import auc, logloss

EvalData = SplitArrays | BatchLoader | Iterable[Batch]


def iter_batches(data: EvalData, batch_size: int, device: torch.device) -> Iterator[Batch]:
    """Batches of ``data`` on ``device`` in stored order (a ``BatchLoader`` is used as given)."""
    if isinstance(data, SplitArrays):
        data = BatchLoader(data, batch_size=batch_size, shuffle=False, device=device)
    elif isinstance(data, Batch):
        data = [data]
    for batch in data:
        yield batch.to(device) if batch.label.device != device else batch


def _logits_and_labels(
    model: nn.Module, data: EvalData, batch_size: int, device: str | torch.device, name: str
) -> tuple[np.ndarray, np.ndarray]:
    dev = check_device(device, "device")
    model.to(dev)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        with torch.no_grad():
            for batch in iter_batches(data, batch_size, dev):
                logits.append(model(batch).float())
                labels.append(batch.label)
    finally:
        model.train(was_training)
    if not logits:
        raise TrainingError(f"{name} has no rows")
    z = torch.cat(logits).cpu().numpy().astype(np.float64)
    y = torch.cat(labels).cpu().numpy().astype(np.float64)
    return z, y


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Float64 sigmoid, stable for large |z|."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def predict(
    model: nn.Module, data: EvalData, *, batch_size: int = 8192, device: str | torch.device = "auto"
) -> np.ndarray:
    """Click probabilities ``[N]`` (float64) in data order.

    The model is moved to ``device`` (in place, like ``nn.Module.to``) and put back in its
    previous train/eval mode afterwards.

    Args:
        model: a ``CTRModel`` (``forward`` returns logits).
        data: a split, a ``BatchLoader`` or any iterable of ``Batch``.
        batch_size: rows per forward when ``data`` is a split.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``...
    """
    z, _ = _logits_and_labels(model, data, batch_size, device, "the data to predict")
    return _sigmoid(z)


def evaluate(
    model: nn.Module,
    data: EvalData,
    *,
    batch_size: int = 8192,
    device: str | torch.device = "auto",
    name: str | None = None,
) -> dict[str, float]:
    """``{"auc", "logloss", "n"}`` of ``model`` on ``data`` (see ``predict`` for arguments).

    Args:
        name: what ``data`` is (e.g. ``"data/enc: test split"``), for error messages.

    Raises:
        TrainingError: ``data`` has no rows, or only one class (AUC is undefined); the
            message names ``name``. Splits are checked before the model runs.
    """
    name = name or "the evaluated data"
    if isinstance(data, SplitArrays):
        check_labels(np.asarray(data.label), name)
    z, y = _logits_and_labels(model, data, batch_size, device, name)
    check_labels(y, name)
    p = _sigmoid(z)
    return {"auc": auc(y, z), "logloss": logloss(y, p), "n": float(y.size)}
