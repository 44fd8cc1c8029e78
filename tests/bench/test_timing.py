"""time_forward: restores threads and mode, reports consistent numbers."""

from __future__ import annotations

import statistics

import pytest
import torch
from conftest import random_batch

from ctrzip.bench.timing import time_forward
from ctrzip.models.base import build_model


def test_time_forward_reports_median_and_restores_state(tiny_schema) -> None:
    model = build_model("deepfm", tiny_schema, {"embedding_dim": 4, "mlp": [8], "dropout": 0.5})
    model.train()
    batches = [random_batch(tiny_schema, n=64, seed=i) for i in range(3)]
    threads = torch.get_num_threads()
    res = time_forward(model, batches, warmup=1, repeats=4, threads=1, device="cpu")
    assert torch.get_num_threads() == threads and model.training
    assert len(res["timings"]) == 4 * 3 and res["threads"] == 1 and res["device"] == "cpu"
    assert res["median_s"] == statistics.median(res["timings"]) > 0
    assert res["samples_per_s"] == pytest.approx(64 / res["median_s"])
    # inference_mode: no parameter gets a gradient
    assert all(p.grad is None for p in model.parameters())


def test_time_forward_rejects_bad_arguments(tiny_schema) -> None:
    model = build_model("lr", tiny_schema, {})
    with pytest.raises(ValueError):
        time_forward(model, [], device="cpu")
    with pytest.raises(ValueError):
        time_forward(model, [random_batch(tiny_schema)], repeats=0, device="cpu")
