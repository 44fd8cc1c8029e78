"""Checks shared by the zoo test files."""

from __future__ import annotations

import torch

from ctrzip.config import from_dict, to_dict
from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.models.base import CTRModel, build_model


def assert_spec_round_trip(model: CTRModel, key: str, schema: FeatureSchema, batch: Batch) -> None:
    """Config round-trips, and a model rebuilt from ``spec()`` loads strictly and predicts the same."""
    cfg = model.config
    assert from_dict(type(cfg), to_dict(cfg)) == cfg
    spec = model.spec()
    assert spec["model"] == key
    rebuilt = build_model(spec["model"], schema, spec["config"]).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(rebuilt(batch), model(batch))
