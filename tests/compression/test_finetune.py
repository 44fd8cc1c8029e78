"""Every method's fine-tune goes through ``guarded_finetune``: it keeps the direct (plug-in)
model bit for bit unless training beats it on validation, and the report shows both."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from ctrzip.compression import compress
from ctrzip.compression.baselines import (
    CCEConfig,
    DHEConfig,
    HashingConfig,
    MixedDimConfig,
    PruneConfig,
    QRConfig,
)
from ctrzip.compression.finetune import guarded_finetune
from ctrzip.compression.lowrank import LowRankConfig, SVDConfig, TTConfig
from ctrzip.compression.mec.method import MECConfig, PQConfig
from ctrzip.compression.mec.stage1 import CodeLearningConfig
from ctrzip.compression.mec.stage2 import StageTwoConfig
from ctrzip.data.dataset import EncodedDataset
from ctrzip.errors import CompressionError
from ctrzip.train import TrainConfig, Trainer, evaluate

from .lowrank._lowrank_data import make_dataset, make_model

WRECK = 1e3  # an lr that can only destroy the model
_CL = CodeLearningConfig(steps=5, batch_size=32, kmeans_iters=3, num_negatives=2)
_MEC = {"num_subspaces": 2, "codebook_size": 4, "min_vocab": 50, "device": "cpu", "progress": False}
_LOW = {"device": "cpu", "finetune_batch_size": 64, "batch_size": 256}


def _mec(cls, protocol, lr):  # type: ignore[no-untyped-def]
    stage = StageTwoConfig(lr=lr, epochs=1, batch_size=64)
    return cls(code_learning=_CL, protocol=protocol, finetune=stage, retrain=stage, **_MEC)


# name -> (config without training, config with a destructive training)
CASES = {
    "mec finetune": (_mec(MECConfig, "none", 1e-3), _mec(MECConfig, "finetune", WRECK)),
    "mec retrain": (_mec(MECConfig, "none", 1e-3), _mec(MECConfig, "retrain", WRECK)),
    "pq finetune": (_mec(PQConfig, "none", 1e-3), _mec(PQConfig, "finetune", WRECK)),
    "lowrank mlp": (
        LowRankConfig(rank=4, finetune_epochs=0, **_LOW),
        LowRankConfig(rank=4, lr=WRECK, **_LOW),
    ),
    "lowrank embedding": (
        LowRankConfig(mlp=False, embedding=True, embedding_rank=2, finetune_epochs=0, **_LOW),
        LowRankConfig(mlp=False, embedding=True, embedding_rank=2, lr=WRECK, **_LOW),
    ),
    "svd": (
        SVDConfig(rank=4, embedding=True, embedding_rank=2, finetune_epochs=0, **_LOW),
        SVDConfig(rank=4, embedding=True, embedding_rank=2, lr=WRECK, **_LOW),
    ),
    "tt": (
        TTConfig(tt_rank=2, min_vocab=50, finetune_epochs=0, **_LOW),
        TTConfig(tt_rank=2, min_vocab=50, lr=WRECK, **_LOW),
    ),
    **{  # the table baselines, from the trained tables
        name: (cls(**kw, finetune_epochs=0, **_LOW), cls(**kw, lr=WRECK, **_LOW))
        for name, cls, kw in (
            ("hashing", HashingConfig, {"min_vocab": 20}),
            ("qr", QRConfig, {"min_vocab": 20, "ratio": 2.0}),
            ("mixed_dim", MixedDimConfig, {"min_vocab": 20}),
            # distilled well enough that an lr of 1e3 cannot beat it by luck
            ("dhe", DHEConfig, {"min_vocab": 20, "distill_steps": 300, "distill_batch_size": 256}),
            ("prune", PruneConfig, {"min_vocab": 20}),
            # no re-clustering round: a round may improve the model without any training
            (
                "cce",
                CCEConfig,
                {"min_vocab": 20, "ratio": 2.0, "num_chunks": 2, "kmeans_iters": 3, "recluster_rounds": 0},
            ),  # fmt: skip
        )
    },
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    """Tiny matmuls (DHE's distillation above all): thread hand-offs would dominate on a busy machine."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):  # type: ignore[no-untyped-def]
    data = make_dataset(tmp_path_factory.mktemp("ft"), n_train=512, n_valid=256)
    model = make_model("deepfm")
    Trainer(TrainConfig(epochs=4, batch_size=64, lr=1e-2, progress=False, device="cpu")).fit(
        model, data["train"], data["valid"]
    )
    return data, model


@pytest.mark.parametrize("name", list(CASES))
def test_destructive_finetune_leaves_the_direct_model_bit_identical(trained, name):  # type: ignore[no-untyped-def]
    data, base = trained
    direct_cfg, wreck_cfg = CASES[name]
    direct = compress(copy.deepcopy(base), direct_cfg, data)
    model = compress(copy.deepcopy(base), wreck_cfg, data)
    want, got = direct.state_dict(), model.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), name
    metrics = model.compression_log[-1]["report"]["metrics"]
    json.dumps(metrics)
    for key in ("before", "direct", "final"):
        assert set(metrics[key]) == {"auc", "logloss", "n"}
    assert metrics["final"] == metrics["direct"]
    assert metrics["before"] == evaluate(base, data["valid"], device="cpu")
    assert metrics["direct"] == evaluate(direct, data["valid"], device="cpu")
    assert direct.compression_log[-1]["report"]["metrics"]["final"] == metrics["direct"]


def test_unguarded_destructive_finetune_does_change_the_model(trained):  # type: ignore[no-untyped-def]
    """The control: without keep_start the same lr wrecks the model, so the guard did the work."""
    data, base = trained
    direct_cfg, wreck_cfg = CASES["lowrank mlp"]
    direct = compress(copy.deepcopy(base), direct_cfg, data)
    wrecked = compress(copy.deepcopy(base), LowRankConfig(rank=4, lr=WRECK, keep_start=False, **_LOW), data)
    rep = wrecked.compression_log[-1]["report"]
    assert rep["metrics"]["final"]["auc"] < rep["metrics"]["direct"]["auc"]
    want, got = direct.state_dict(), wrecked.state_dict()
    assert any(not torch.equal(want[k], got[k]) for k in want)


def test_a_finetune_that_helps_is_kept(trained):  # type: ignore[no-untyped-def]
    data, _ = trained
    model = make_model("deepfm", seed=3)  # untrained: training can only help
    tc = TrainConfig(epochs=3, batch_size=64, lr=1e-2, progress=False, device="cpu")
    res = guarded_finetune(model, data, tc)
    assert not res.kept_start and res.final["auc"] > res.direct["auc"]
    assert res.final == evaluate(model, data["valid"], device="cpu")
    assert res.summary()["steps"] == res.history.steps > 0


def test_finetune_refuses_missing_splits_before_touching_the_model(trained, tmp_path: Path):  # type: ignore[no-untyped-def]
    data, base = trained
    tc = TrainConfig(epochs=1, batch_size=64, progress=False, device="cpu")
    no_valid = EncodedDataset(
        root=tmp_path, schema=data.schema, counts=data.counts, splits={"train": data["train"]}
    )
    model = copy.deepcopy(base)
    with pytest.raises(CompressionError, match=rf"{tmp_path}: no 'valid' split \(have: train\)"):
        guarded_finetune(model, no_valid, tc)
    with pytest.raises(CompressionError, match="keep_start needs a validation split"):
        guarded_finetune(model, no_valid, tc, valid_split=None)
    with pytest.raises(CompressionError, match="no 'valid' split"):
        compress(model, LowRankConfig(rank=4, **_LOW), no_valid)
    with pytest.raises(CompressionError, match="no 'valid' split"):
        compress(model, _mec(MECConfig, "finetune", 1e-4), no_valid)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in model.state_dict().items())
    # training blind is allowed when asked for explicitly
    res = guarded_finetune(model, no_valid, tc, valid_split=None, keep_start=False)
    assert res.direct is None and res.final is None and res.history.steps > 0


def test_factorized_methods_without_data_refuse_finetune_and_evaluation():
    model = make_model("deepfm")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(
        CompressionError, match="finetune_epochs=1 and eval_split='valid' need an encoded dataset"
    ):
        compress(model, SVDConfig(rank=4, device="cpu"))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="keep_start compares"):
        LowRankConfig(rank=4, eval_split=None)
    compress(model, SVDConfig(rank=4, finetune_epochs=0, eval_split=None, device="cpu"))
    assert model.compression_log[-1]["report"]["metrics"] == {"before": None, "direct": None, "final": None}
