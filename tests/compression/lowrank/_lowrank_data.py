"""Tiny on-disk encoded dataset and models for the low-rank / SVD / TT tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ctrzip.data.dataset import EncodedDataset, SplitArrays, save_counts, save_split
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.models.base import CTRModel, build_model


def schema() -> FeatureSchema:
    return FeatureSchema(
        fields=(
            FieldSpec("user", "categorical", vocab_size=30),
            FieldSpec("item", "categorical", vocab_size=60),
            FieldSpec("tags", "sequence", vocab_size=15, max_len=3),
            FieldSpec("price", "dense", source="numeric"),
            FieldSpec("cat", "categorical", vocab_size=6),
        )
    )


def _split(s: FeatureSchema, n: int, rng: np.random.Generator) -> SplitArrays:
    cols = []
    for f in s.sparse_fields:
        p = 1.0 / np.arange(1, f.vocab_size + 1) ** 0.8  # Zipf-like, id 0 (missing) included
        cols.append(rng.choice(f.vocab_size, size=(n, f.max_len), p=p / p.sum()))
    sparse = np.concatenate(cols, axis=1).astype(np.int32)
    dense = rng.standard_normal((n, len(s.dense_fields))).astype(np.float32)
    logit = np.sin(sparse[:, 0] * 0.7) + np.cos(sparse[:, 1] * 0.3) + 0.5 * dense[:, 0]
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return SplitArrays(sparse, dense, label)


def counts_of(s: FeatureSchema, split: SplitArrays) -> dict[str, np.ndarray]:
    sl = s.sparse_slices()
    return {
        f.name: np.bincount(np.asarray(split.sparse[:, sl[f.name]]).ravel(), minlength=f.vocab_size)
        for f in s.sparse_fields
    }


def make_dataset(root: Path, n_train: int = 512, n_valid: int = 256, seed: int = 0) -> EncodedDataset:
    s = schema()
    rng = np.random.default_rng(seed)
    train, valid = _split(s, n_train, rng), _split(s, n_valid, rng)
    root.mkdir(parents=True, exist_ok=True)
    s.save(root / "feature_map.json")
    save_split(root, "train", train)
    save_split(root, "valid", valid)
    save_counts(root / "counts.npz", counts_of(s, train))
    return EncodedDataset.open(root)


def make_model(name: str = "deepfm", seed: int = 0, **params: object) -> CTRModel:
    """A model with non-trivial random weights (std 0.1 tables) so parity tests are meaningful."""
    torch.manual_seed(seed)
    base = {"embedding_dim": 8, "embedding_init_std": 0.1, "mlp": [24, 20, 16]}
    base.update(params)
    return build_model(name, schema(), base).eval()


def make_low_rank(
    model: CTRModel, table_rank: int | None = None, linears: dict[str, int] | None = None
) -> CTRModel:
    """Give tables rows in a ``table_rank``-dim linear subspace (padding row kept zero) and the
    named Linears weights of the given rank, so that compression at those ranks is exact while
    still smaller than the dense modules (a full-rank factorization never is)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        if table_rank is not None:
            for table in model.embedding.tables.values():
                v, d = table.weight.shape
                w = torch.randn(v, table_rank, generator=g) @ torch.randn(table_rank, d, generator=g) * 0.1
                w[0] = 0.0
                table.weight.copy_(w)
        for fqn, k in (linears or {}).items():
            lin = model.get_submodule(fqn)
            m, n = lin.weight.shape
            lin.weight.copy_(torch.randn(m, k, generator=g) @ torch.randn(k, n, generator=g) / n**0.5)
    return model
