"""Shared tiny fixtures: a schema with every field kind, random batches, the shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema, FieldSpec

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"


def make_schema() -> FeatureSchema:
    return FeatureSchema(
        fields=(
            FieldSpec("user", "categorical", vocab_size=50),
            FieldSpec("item", "categorical", vocab_size=120),
            FieldSpec("cat", "categorical", vocab_size=7),
            FieldSpec("tags", "sequence", vocab_size=20, max_len=4),
            FieldSpec("price", "dense", source="numeric"),
        )
    )


def random_batch(schema: FeatureSchema, n: int = 32, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    cols = []
    for f in schema.sparse_fields:
        cols.append(torch.randint(0, f.vocab_size, (n, f.max_len), generator=g))
    sparse = torch.cat(cols, dim=1).to(torch.int32)
    dense = torch.randn(n, len(schema.dense_fields), generator=g)
    label = torch.randint(0, 2, (n,), generator=g).float()
    return Batch(sparse, dense, label)


@pytest.fixture
def tiny_schema() -> FeatureSchema:
    return make_schema()


@pytest.fixture
def tiny_batch(tiny_schema: FeatureSchema) -> Batch:
    return random_batch(tiny_schema)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA
