"""Honest inference timing: eval mode, inference_mode, fixed threads, warm-up, median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ctrzip.data.batch import Batch
from ctrzip.data.loader import resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    warmup: int = 3,
    repeats: int = 10,
    threads: int | None = None,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """Median forward time per batch over ``repeats`` passes through ``batches``.

    Warm-up passes are excluded; CUDA is synchronized before every clock read; the
    thread count is fixed for the measurement and restored afterwards, as is the
    model's train/eval mode. The model is moved to ``device`` (in place).

    Args:
        model: module whose ``forward(batch)`` returns logits.
        batches: batches to run (moved to ``device`` once, before timing).
        warmup: untimed forwards before measuring.
        repeats: timed passes over ``batches``.
        threads: ``torch.set_num_threads`` value during timing (None = leave as is).
        device: ``auto``, ``cpu``, ``cuda``...

    Returns:
        ``{"median_s", "samples_per_s", "batch_size", "threads", "device", "timings"}``
        where ``median_s`` is per batch and ``samples_per_s`` uses the mean batch size.
    """
    if not batches:
        raise ValueError("time_forward needs at least one batch")
    if warmup < 0 or repeats < 1:
        raise ValueError("need warmup >= 0 and repeats >= 1")
    dev = resolve_device(device)
    model.to(dev)
    data = [b.to(dev) for b in batches]
    prev_threads = torch.get_num_threads()
    was_training = model.training
    if threads is not None:
        torch.set_num_threads(threads)
    model.eval()
    timings: list[float] = []
    try:
        with torch.inference_mode():
            for i in range(warmup):
                model(data[i % len(data)])
            _sync(dev)
            for _ in range(repeats):
                for batch in data:
                    t0 = time.perf_counter()
                    model(batch)
                    _sync(dev)
                    timings.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(prev_threads)
        model.train(was_training)
    median = statistics.median(timings)
    mean_rows = sum(len(b) for b in data) / len(data)
    return {
        "median_s": median,
        "samples_per_s": mean_rows / median,
        "batch_size": mean_rows,
        "threads": torch.get_num_threads() if threads is None else threads,
        "device": str(dev),
        "timings": timings,
    }
