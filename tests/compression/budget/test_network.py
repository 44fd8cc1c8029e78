"""The budget allocator's network forms: int8 and feature-mimicking low rank with int8 factors."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

import ctrzip
from ctrzip.compression.budget import BudgetConfig
from ctrzip.compression.budget.network import lowrank_int8, module_bytes, network_candidates
from ctrzip.compression.lowrank.factorized import probe_batch
from ctrzip.compression.sizes import size_report
from ctrzip.compression.stats import RunningMoments, pca
from ctrzip.errors import CompressionError
from ctrzip.nn.int8_linear import Int8Linear
from ctrzip.nn.lowrank_linear import LowRankLinear
from ctrzip.train.trainer import TrainConfig, Trainer

from ..lowrank._lowrank_data import make_dataset, make_model


def _rank3_layer(n: int = 40, m: int = 32) -> tuple[nn.Linear, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(n, m)
    with torch.no_grad():  # outputs live in a 3-dimensional affine subspace
        lin.weight.copy_(torch.randn(m, 3, generator=g) @ torch.randn(3, n, generator=g))
    return lin, torch.randn(4000, n, generator=g)


def test_lowrank_int8_keeps_a_low_rank_layer_and_its_bytes() -> None:
    lin, x = _rank3_layer()
    obs = RunningMoments()
    with torch.no_grad():
        obs.update(lin(x))
    res = pca(obs)
    mod = lowrank_int8(lin, res, 0.99)
    assert isinstance(mod, LowRankLinear) and mod.rank == 3
    assert isinstance(mod.down, Int8Linear) and isinstance(mod.up, Int8Linear)
    with torch.no_grad():
        y, approx = lin(x), mod(x)
    rel = float((approx - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
    assert rel < 1e-3  # only int8 rounding is left: the rank-3 projection is exact
    # independent byte count: int8 weights, float32 per-output scales and biases
    n, m, k = 40, 32, 3
    expect = (k * n + m * k) + 4 * (k + m) + 4 * (k + m)
    assert module_bytes(mod) == expect


def test_lowrank_int8_refuses_a_form_that_does_not_shrink() -> None:
    lin, x = _rank3_layer(n=4, m=4)
    obs = RunningMoments()
    with torch.no_grad():
        obs.update(lin(x))
    assert lowrank_int8(lin, pca(obs), 0.999999) is None  # k = 3: 3 * 8 >= 16


def test_network_candidates_install_what_they_count() -> None:
    lin, x = _rank3_layer()
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(32, 1))
    linears = {"0": model[0], "2": model[2]}
    obs = RunningMoments()
    with torch.no_grad():
        obs.update(lin(x))

    def install(mods):  # type: ignore[no-untyped-def]
        for k, v in mods.items():
            model._modules[k] = v

    forms = network_candidates(linears, {"0": pca(obs)}, (0.99,), install)
    names = [c.name for c, _ in forms]
    assert names == ["float", "int8", "lowrank@0.99+int8"]
    for cand, apply in forms:
        apply()
        assert module_bytes(model) == cand.nbytes
    assert [c.nbytes for c, _ in forms] == sorted((c.nbytes for c, _ in forms), reverse=True)
    forms[0][1]()
    assert model[0] is lin  # float puts the original modules back


@pytest.fixture(scope="module")
def trained(tmp_path_factory):  # type: ignore[no-untyped-def]
    data = make_dataset(tmp_path_factory.mktemp("budget_net"), n_train=2000, n_valid=1500)
    model = make_model("deepfm")
    Trainer(TrainConfig(epochs=2, lr=3e-3, progress=False, seed=0)).fit(model, data["train"], data["valid"])
    return data, model.eval()


def test_budget_offers_measured_lowrank_network_and_saves_it(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data, base = trained
    model = copy.deepcopy(base)
    # a budget of exactly the smallest reachable size forces the smallest form of every target
    with pytest.raises(CompressionError, match="smallest reachable model is") as err:
        ctrzip.compress(
            copy.deepcopy(base), BudgetConfig(mb=1e-6, calib_rows=1000, lowrank_energy=(0.9,)), data
        )
    smallest = int(re.search(r"model is ([\d,]+) B", str(err.value)).group(1).replace(",", ""))
    assert smallest < size_report(model)["total"]["bytes"]
    ctrzip.compress(model, BudgetConfig(mb=smallest / 2**20, calib_rows=1000, lowrank_energy=(0.9,)), data)
    assert size_report(model)["total"]["bytes"] == smallest
    report = model.compression_log[-1]["report"]
    net = next(p for p in report["plan"] if p["target"] == "network")
    assert [o["name"] for o in net["options"]][:2] == ["float", "int8"]
    assert any(o["name"] == "lowrank@0.9+int8" for o in net["options"])
    assert net["representation"] == "lowrank@0.9+int8"
    assert any(isinstance(m, LowRankLinear) for m in model.modules())
    batch = probe_batch(data.schema, 32, torch.device("cpu"))
    with torch.no_grad():
        expect = model(batch)
    ctrzip.save(tmp_path / "m", model)
    loaded = ctrzip.load(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), expect, rtol=0, atol=0)


def test_bad_lowrank_energy_is_refused() -> None:
    with pytest.raises(CompressionError, match="lowrank_energy"):
        BudgetConfig(mb=1, lowrank_energy=(1.0,))
