"""Training counts are required where a method weights by them: a missing ``counts.npz`` (or a
field missing from it, or a wrong length) is an error naming the file and the fix, never a
silent fallback to uniform weights."""

from __future__ import annotations

import copy
import dataclasses
import shutil

import numpy as np
import pytest
import torch

from ctrzip.compression import compress
from ctrzip.compression.lowrank import LowRankConfig
from ctrzip.compression.mec.method import MECConfig, PQConfig
from ctrzip.compression.mec.stage1 import CodeLearningConfig
from ctrzip.data.dataset import EncodedDataset, save_counts
from ctrzip.errors import CompressionError
from ctrzip.models.base import build_model

from ._mec_data import make_mec_dataset

FAST = CodeLearningConfig(steps=3, batch_size=64, kmeans_iters=2, num_negatives=2)
TOP = {
    "num_subspaces": 2,
    "codebook_size": 8,
    "min_vocab": 100,
    "protocol": "none",
    "device": "cpu",
    "progress": False,
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("counts")
    data = make_mec_dataset(root / "full", vocab=200, rows=800)
    torch.manual_seed(0)
    model = build_model("deepfm", data.schema, {"embedding_dim": 4, "mlp": [8]})
    return root, data, model


def _copy_without_counts(root, data, keep: dict | None = None):  # type: ignore[no-untyped-def]
    dst = root / f"nocounts{len(list(root.iterdir()))}"
    shutil.copytree(data.root, dst)
    (dst / "counts.npz").unlink()
    if keep is not None:
        save_counts(dst / "counts.npz", keep)
    return EncodedDataset.open(dst)


def _mec(**kw):  # type: ignore[no-untyped-def]
    return MECConfig(**TOP, **kw)


def test_mec_without_counts_file_names_it_and_the_fix_and_leaves_the_model(setup):  # type: ignore[no-untyped-def]
    root, data, base = setup
    bare = _copy_without_counts(root, data)
    model = copy.deepcopy(base)
    with pytest.raises(CompressionError) as err:
        compress(model, _mec(code_learning=FAST), bare)
    msg = str(err.value)
    assert str(bare.root / "counts.npz") in msg and "is missing" in msg
    assert "ctrzip data encode" in msg and "weighting: none" in msg and "weighting: log2" in msg
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in model.state_dict().items())
    # count weighting needs them too (frequency PQ)
    with pytest.raises(CompressionError, match="weighting: count"):
        compress(copy.deepcopy(base), MECConfig.variant("freq_pq", **TOP, steps=3, batch_size=64), bare)


def test_weighting_none_runs_without_counts_and_says_so(setup):  # type: ignore[no-untyped-def]
    root, data, base = setup
    bare = _copy_without_counts(root, data)
    model = compress(copy.deepcopy(base), PQConfig(**TOP, code_learning=FAST), bare)
    rep = model.compression_log[-1]["report"]
    assert rep["fields"]["big"]["counts_present"] is False
    assert model.compression_log[-1]["config"]["code_learning"]["weighting"] == "none"


def test_mec_counts_missing_a_field_or_of_the_wrong_length(setup):  # type: ignore[no-untyped-def]
    root, data, base = setup
    partial = _copy_without_counts(root, data, keep={"small": np.ones(8, dtype=np.int64)})
    with pytest.raises(CompressionError, match=r"counts.npz has no counts for field 'big'"):
        compress(copy.deepcopy(base), _mec(code_learning=FAST), partial)
    short = _copy_without_counts(root, data, keep={"big": np.ones(50, dtype=np.int64)})
    with pytest.raises(
        CompressionError, match=r"field 'big' has 50 counts but the model's table has 200 rows"
    ):
        compress(copy.deepcopy(base), _mec(code_learning=FAST), short)


def test_lowrank_count_statistics_without_counts_name_the_file_and_the_fix(setup):  # type: ignore[no-untyped-def]
    root, data, base = setup
    bare = _copy_without_counts(root, data)
    cfg = LowRankConfig(mlp=False, embedding=True, embedding_rank=2, finetune_epochs=0, device="cpu")
    with pytest.raises(CompressionError) as err:
        compress(copy.deepcopy(base), cfg, bare)
    msg = str(err.value)
    assert (
        str(bare.root / "counts.npz") in msg
        and "ctrzip data encode" in msg
        and "embedding_stats: data" in msg
    )
    short = _copy_without_counts(
        root, data, keep={"big": np.ones(5, dtype=np.int64), "small": np.ones(8, np.int64)}
    )
    with pytest.raises(CompressionError, match="field 'big' has 5 counts but the model's table has 200 rows"):
        compress(copy.deepcopy(base), cfg, short)
    # the data pass needs no counts
    compress(copy.deepcopy(base), dataclasses.replace(cfg, embedding_stats="data"), bare)
