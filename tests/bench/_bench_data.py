"""Tiny encoded dataset (train/valid/test) and a tiny suite file for the bench tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from compression.lowrank._lowrank_data import _split, make_dataset, schema

from ctrzip.data.dataset import save_split

TINY_SUITE = """\
description: tiny test suite
dense: {embedding_dim: 4, mlp: [8], epochs: 1, lr: 1.0e-2, batch_size: 256}
timing: {batch_size: 10000, rounds: 1, threads: 1}
cells:
  - label: int8 rows
    steps: [{method: int8, settings: {eval_split: null}}]
  - label: int4 rows + int8 linear
    steps:
      - {method: int4, settings: {eval_split: null}}
      - {method: linear_int8, settings: {eval_split: null}}
"""


def make_bench_data(root: Path, seed: int = 0) -> Path:
    """``make_dataset`` plus a 256-row test split."""
    make_dataset(root, seed=seed)
    save_split(root, "test", _split(schema(), 256, np.random.default_rng(seed + 100)))
    return root


def write_suite(path: Path, text: str = TINY_SUITE) -> Path:
    path.write_text(text)
    return path
