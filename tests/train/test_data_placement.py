"""``train.data_placement``: honoured (same weights from every placement, resumable across
them) or refused by name (bad value, a split that does not fit, a loader that disagrees)."""

from __future__ import annotations

import pytest
import torch

from ctrzip.config import ConfigError, apply_overrides, from_dict
from ctrzip.data import placement
from ctrzip.data.loader import BatchLoader
from ctrzip.errors import TrainingError
from ctrzip.models.base import build_model
from ctrzip.train import TrainConfig, Trainer

from ._synth import interaction_schema, planted_pairs

SCHEMA = interaction_schema(num_fields=4, vocab=10)
TRAIN, VALID = planted_pairs(SCHEMA, 600, seed=0), planted_pairs(SCHEMA, 200, seed=1)
FAST = {"progress": False, "device": "cpu", "epochs": 2, "batch_size": 64}


def _fit(tmp_path=None, **kw):
    model = build_model("deepfm", SCHEMA, {"embedding_dim": 4, "mlp": [8]}, seed=0)
    out = {"out_dir": str(tmp_path)} if tmp_path is not None else {}
    hist = Trainer(TrainConfig(**{**FAST, **out, **kw})).fit(model, TRAIN, VALID)
    return model, hist


def _same(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_placement_trains_the_same_weights() -> None:
    ref, ref_hist = _fit(data_placement="stream")
    for choice in ("resident", "auto"):
        model, hist = _fit(data_placement=choice)
        _same(ref, model)
        assert [r["val_auc"] for r in hist.epochs] == [r["val_auc"] for r in ref_hist.epochs]


def test_a_run_resumes_under_another_placement(tmp_path) -> None:
    ref, _ = _fit(data_placement="stream")
    _fit(tmp_path, data_placement="stream", max_steps=12)  # stops mid-epoch 2 (10 steps/epoch)
    model, hist = _fit(tmp_path, data_placement="resident")
    assert hist.resumed_at_step == 12
    _same(ref, model)


def test_bad_value_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="data_placement must be auto, resident or stream, got 'gpu'"):
        TrainConfig(data_placement="gpu")
    data = apply_overrides({"train": {}}, ["train.data_placement=gpu"])
    with pytest.raises(ConfigError, match=r"run\.yaml: train\.data_placement must be one of"):
        from_dict(TrainConfig, data["train"], source="run.yaml", path="train")


def test_resident_that_does_not_fit_is_refused_before_training(monkeypatch) -> None:
    monkeypatch.setattr(placement, "free_bytes", lambda device: 1024)
    with pytest.raises(ConfigError, match=r"^train\.data_placement=resident: the split needs .* GiB on cpu"):
        _fit(data_placement="resident")
    _fit(data_placement="auto", epochs=1)  # auto falls back to streaming instead


def test_loader_disagreeing_with_the_placement_setting_is_refused() -> None:
    loader = BatchLoader(TRAIN, 64, shuffle=True, data_placement="stream")
    model = build_model("lr", SCHEMA, {})
    with pytest.raises(
        TrainingError, match="BatchLoader has data_placement='stream' but train.data_placement"
    ):
        Trainer(TrainConfig(**{**FAST, "data_placement": "resident"})).fit(model, loader)
    Trainer(TrainConfig(**{**FAST, "epochs": 1, "data_placement": "auto"})).fit(
        model, loader
    )  # auto: as given
