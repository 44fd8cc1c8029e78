"""Trainer tests run single-threaded: on the shared 2-core CI box, 2 OpenMP threads under load
are several times slower than 1 on these tiny models."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
