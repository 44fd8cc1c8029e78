"""The ``svd`` baseline: same structures from weights, exact at full rank, config checks."""

from __future__ import annotations

import copy

import pytest
import torch

from ctrzip.compression import compress
from ctrzip.compression.lowrank.factorized import probe_batch
from ctrzip.compression.lowrank.fold import FoldedLinear
from ctrzip.compression.lowrank.svd import SVDConfig
from ctrzip.config import from_dict, to_dict
from ctrzip.nn.embedding.lowrank import LowRankTable
from ctrzip.nn.lowrank_linear import LowRankLinear

from ._lowrank_data import make_low_rank, make_model


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(probe_batch(model.schema, 64, torch.device("cpu"), 3)).double()


def test_full_rank_svd_is_lossless_and_data_free() -> None:
    # weights of rank 4 (Linears) and 2 (tables): full rank there, and smaller than dense
    linears = {"mlp.layers.2": 4, "mlp.layers.4": 4}
    model = make_low_rank(make_model("deepfm", mlp=[12, 12, 12]), table_rank=2, linears=linears)
    ref = _logits(model)
    cfg = SVDConfig(
        rank=4, embedding=True, embedding_rank=2, finetune_epochs=0, eval_split=None, device="cpu"
    )
    compress(model, cfg, None)
    assert isinstance(model.get_submodule("mlp.layers.2"), LowRankLinear)
    assert isinstance(model.embedding.tables["item"], LowRankTable)
    assert isinstance(model.get_submodule("mlp.layers.0"), FoldedLinear)
    torch.testing.assert_close(_logits(model), ref, atol=1e-4, rtol=0)


def test_truncated_svd_table_is_best_rank_k_approximation() -> None:
    model = make_model("nfm")
    x = model.embedding.tables["item"].materialize().double()
    compress(
        model,
        SVDConfig(
            mlp=False, embedding=True, embedding_rank=3, finetune_epochs=0, eval_split=None, device="cpu"
        ),
    )
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    best = (u[:, :3] * s[:3]) @ vh[:3]
    got = model.embedding.tables["item"].materialize().double()
    torch.testing.assert_close(got[1:], best[1:], atol=1e-5, rtol=0)  # id 0: padding stays zero
    assert got[0].abs().max() == 0


def test_relu_setting_and_config_validation() -> None:
    model = make_model("deepfm", mlp=[12, 12, 12])
    before = copy.deepcopy(model)
    compress(model, SVDConfig(rank=4, relu_between=True, finetune_epochs=0, eval_split=None, device="cpu"))
    low = model.get_submodule("mlp.layers.4")
    assert isinstance(low.act, torch.nn.ReLU) and low.rank == 4
    assert not torch.allclose(_logits(model), _logits(before))
    c = SVDConfig(rank=8, embedding=True, embedding_fields=("user",))
    assert from_dict(SVDConfig, to_dict(c)) == c
    with pytest.raises(ValueError, match="rank must be >= 1"):
        SVDConfig(rank=0)
    with pytest.raises(ValueError, match="set embedding rank"):
        SVDConfig(embedding=True, embedding_rank=None)
