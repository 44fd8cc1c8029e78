"""Small in-memory splits for trainer tests (numpy only, seeded)."""

from __future__ import annotations

import numpy as np

from ctrzip.data.dataset import SplitArrays
from ctrzip.data.schema import FeatureSchema, FieldSpec


def interaction_schema(num_fields: int = 6, vocab: int = 12) -> FeatureSchema:
    return FeatureSchema(
        fields=tuple(FieldSpec(f"f{i}", "categorical", vocab_size=vocab) for i in range(num_fields))
    )


def planted_pairs(schema: FeatureSchema, n: int, seed: int, strength: float = 2.0) -> SplitArrays:
    """Labels from a logistic model driven by field-pair interactions (f0,f1), (f2,f3), ...

    Each pair's weight table is centred over rows and columns, so no single id carries
    signal on its own: a first-order model (LR) can only guess, an FM/DeepFM can learn it.
    """
    rng = np.random.default_rng(seed)
    table_rng = np.random.default_rng(1234)  # same planted model for every split
    vocab = schema.fields[0].vocab_size
    ids = rng.integers(1, vocab, size=(n, schema.num_fields))
    logit = np.zeros(n)
    for a in range(0, schema.num_fields - 1, 2):
        w = table_rng.standard_normal((vocab, vocab))
        w -= w.mean(0, keepdims=True)
        w -= w.mean(1, keepdims=True)
        logit += strength * w[ids[:, a], ids[:, a + 1]]
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return SplitArrays(ids.astype(np.int32), np.zeros((n, 0), np.float32), label)
