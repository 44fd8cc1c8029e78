"""A tiny encoded dataset on disk for MEC tests: one long-tailed field carries the signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ctrzip.data.dataset import EncodedDataset, SplitArrays, save_counts, save_split
from ctrzip.data.schema import FeatureSchema, FieldSpec


def make_mec_dataset(root: Path, vocab: int = 400, rows: int = 6000, seed: int = 0) -> EncodedDataset:
    """Field ``big`` (Zipf ids 1..vocab-2, each with its own logit), ``small`` (8 ids), one dense."""
    schema = FeatureSchema(
        fields=(
            FieldSpec("big", "categorical", vocab_size=vocab),
            FieldSpec("small", "categorical", vocab_size=8),
            FieldSpec("x", "dense", source="numeric"),
        )
    )
    rng = np.random.default_rng(seed)
    effect = rng.normal(0, 1.5, vocab)
    counts = np.zeros(vocab, dtype=np.int64)
    for name, n in (("train", rows), ("valid", rows // 3)):
        p = 1.0 / np.arange(1, vocab - 1) ** 1.1
        big = rng.choice(np.arange(1, vocab - 1), size=n, p=p / p.sum())
        small = rng.integers(1, 7, size=n)
        dense = rng.normal(size=(n, 1)).astype(np.float32)
        logit = effect[big] + 0.5 * (small - 3.5) / 3.5 + 0.3 * dense[:, 0]
        label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
        save_split(root, name, SplitArrays(np.stack([big, small], 1).astype(np.int32), dense, label))
        if name == "train":
            counts = np.bincount(big, minlength=vocab)
    schema.save(root / "feature_map.json")
    save_counts(root / "counts.npz", {"big": counts, "small": np.ones(8, dtype=np.int64)})
    return EncodedDataset.open(root)


@pytest.fixture(scope="module", autouse=False)
def one_thread():
    """Tiny tensors run faster on one thread than on two contended ones (shared 2-core CI)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
