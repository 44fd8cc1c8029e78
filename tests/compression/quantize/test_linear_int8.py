"""Int8Linear against nn.Linear, and method linear_int8 across model families."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ctrzip
from ctrzip.compression.lowrank.factorized import probe_batch
from ctrzip.compression.quantize import Int8Config, LinearInt8Config
from ctrzip.compression.sizes import size_report
from ctrzip.errors import CompressionError
from ctrzip.nn.int8_linear import Int8Linear

from ..lowrank._lowrank_data import make_dataset, make_model


@pytest.fixture(scope="module")
def data(tmp_path_factory):  # type: ignore[no-untyped-def]
    return make_dataset(tmp_path_factory.mktemp("linear_int8"))


def test_int8_linear_error_is_within_half_a_step() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(37, 11)
    q = Int8Linear.from_linear(lin)
    step = lin.weight.detach().abs().amax(1, keepdim=True) / 127
    assert ((q.weight - lin.weight.detach()).abs() <= step / 2 + 1e-7).all()
    x = torch.randn(5, 3, 37)
    # the output error is bounded by the weight error times |x|_1 (independent computation)
    bound = (x.abs() @ (step / 2).expand(11, 37).T).squeeze() + 1e-5
    assert ((q(x) - lin(x)).abs() <= bound).all()
    assert q.qweight.dtype == torch.int8 and list(n for n, _ in q.named_parameters()) == ["bias"]


def test_all_zero_row_and_no_bias() -> None:
    lin = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        lin.weight[1] = 0
    q = Int8Linear.from_linear(lin)
    assert q.bias is None and q.weight[1].abs().max() == 0
    torch.testing.assert_close(q(torch.ones(2, 4))[:, 1], torch.zeros(2))


@pytest.mark.parametrize("name", ["deepfm", "dcnv2", "gdcn", "autoint"])
def test_method_shrinks_dense_part_and_round_trips(name, data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = make_model(name)
    dense_before = size_report(model)["components"]["dense"]["bytes"]
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    ctrzip.compress(model, LinearInt8Config(), data)
    report = model.compression_log[-1]["report"]
    assert sum(d["action"] == "compressed" for d in report["targets"]) == n_linear
    assert not any(type(m) is nn.Linear for m in model.modules())
    dense_after = size_report(model)["components"]["dense"]["bytes"]
    assert dense_after < 0.5 * dense_before
    assert report["bytes"]["after"] == size_report(model)["total"]["bytes"]
    m = report["metrics"]
    assert abs(m["direct"]["auc"] - m["before"]["auc"]) < 0.01
    batch = probe_batch(data.schema, 64, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        expect = model(batch)
    ctrzip.save(tmp_path / "m", model)
    loaded = ctrzip.load(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), expect, rtol=0, atol=0)


def test_composes_with_rowwise_tables(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    sizes = [size_report(model)["total"]["bytes"]]
    for cfg in (Int8Config(), LinearInt8Config()):
        ctrzip.compress(model, cfg, data)
        sizes.append(size_report(model)["total"]["bytes"])
        saved = sum(
            d["bytes_before"] - d["bytes_after"] for d in model.compression_log[-1]["report"]["targets"]
        )
        assert sizes[-2] - sizes[-1] == saved > 0  # the per-target decisions add up to the total


def test_unknown_layer_glob_is_refused(data) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CompressionError, match=r"\['nope\.\*'\] match no nn.Linear"):
        ctrzip.compress(make_model("deepfm"), LinearInt8Config(layers=("nope.*",)), data)


@pytest.mark.parametrize("name", ["lr", "fm"])
def test_a_model_without_plain_linears_is_refused_by_the_shared_rule(name: str, data) -> None:  # type: ignore[no-untyped-def]
    model = ctrzip.build_model(name, data.schema, {})
    assert not any(type(m) is nn.Linear for m in model.modules())
    with pytest.raises(
        CompressionError, match="linear_int8: nothing to compress: the settings select no target"
    ) as err:
        ctrzip.compress(model, LinearInt8Config(), data)
    assert err.value.targets == []  # type: ignore[attr-defined]
