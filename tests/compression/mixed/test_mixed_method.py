"""Method ``mixed``: explicit per-field band plans, report contract, refusals, artifact and CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import ctrzip
from ctrzip.cli.main import app
from ctrzip.compression.lowrank.factorized import probe_batch
from ctrzip.compression.mixed import MixedConfig
from ctrzip.compression.quantize import Int8Config
from ctrzip.compression.sizes import size_report
from ctrzip.config import ConfigError, from_dict
from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.banded import BandedTable
from ctrzip.nn.embedding.bands import BandSpec

from ..lowrank._lowrank_data import make_dataset, make_model

PLANS = {
    "item": [
        {"start": 0, "end": 10, "representation": "rowwise", "params": {"bits": 8}},
        {"start": 10, "end": 40, "representation": "pq", "params": {"M": 2, "K": 8}},
        {"start": 40, "end": 60, "representation": "shared", "params": {"S": 2}},
    ],
    "user": [
        {"start": 0, "end": 5, "representation": "float"},
        {"start": 5, "end": 30, "representation": "pq", "params": {"M": 1, "K": 4}},
    ],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):  # type: ignore[no-untyped-def]
    return make_dataset(tmp_path_factory.mktemp("mixed"))


def test_compress_report_save_load(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    before = size_report(model)["total"]["bytes"]
    dense_item = model.embedding.tables["item"].materialize().clone()
    cfg = from_dict(MixedConfig, {"plans": PLANS}, source="plan.yaml")
    ctrzip.compress(model, cfg, data)
    report = model.compression_log[-1]["report"]
    assert [d["target"] for d in report["targets"]] == ["embedding.tables.item", "embedding.tables.user"]
    for d in report["targets"]:
        table = model.get_submodule(d["target"])
        assert isinstance(table, BandedTable) and d["bytes_after"] == table.nbytes() < d["bytes_before"]
    assert report["bytes"]["before"] == before
    assert report["bytes"]["after"] == size_report(model)["total"]["bytes"] < before
    assert report["weights"] == "training counts"
    assert [b["representation"] for b in report["bands"]["embedding.tables.item"]] == [
        "rowwise",
        "pq",
        "shared",
    ]
    m = report["metrics"]
    assert m["before"]["n"] == m["direct"]["n"] == 256 and m["final"] == m["direct"]
    # the fit used the dataset's counts: the shared tail is their weighted mean, by hand
    item = model.embedding.tables["item"]
    c = torch.as_tensor(data.counts["item"]).double().clamp_min(1)
    ids = torch.arange(40, 60, 2)
    expect = (dense_item[ids].double() * c[ids, None]).sum(0) / c[ids].sum()
    torch.testing.assert_close(item(torch.tensor([40]))[0].double(), expect, rtol=1e-5, atol=1e-6)
    batch = probe_batch(data.schema, 64, torch.device("cpu"))
    with torch.no_grad():
        expect_pred = model(batch)
    ctrzip.save(tmp_path / "m", model)
    loaded = ctrzip.load(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), expect_pred, rtol=0, atol=0)


def test_uniform_weights_without_counts(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    ctrzip.compress(
        model, MixedConfig(plans={"user": PLANS["user"]}, use_counts=False, eval_split=None), data
    )
    assert model.compression_log[-1]["report"]["weights"] == "uniform"


@pytest.mark.parametrize(
    ("plans", "message"),
    [
        (
            {"itm": PLANS["item"]},
            r"mixed: plans.itm: no sparse field 'itm' in the model \(fields: user, item",
        ),
        (
            {"item": [{"start": 0, "end": 50, "representation": "float"}]},
            r"mixed: plans.item: bands end at id 50, but the table has 60 ids",
        ),
        (
            {"item": [{"start": 0, "end": 60, "representation": "pq", "params": {"M": 3}}]},
            r"mixed: plans.item: band 0 \[0, 60\) pq: M \(sub-spaces\) must be a positive divisor",
        ),
        (
            {"item": [{"start": 0, "end": 60, "representation": "float"}]},
            r"mixed: plans.item: the plan stores 1,920 B, not less than the float table's 1,920 B",
        ),
    ],
)
def test_bad_plans_refused(data, plans, message) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    with pytest.raises(CompressionError, match=message):
        ctrzip.compress(model, MixedConfig(plans=plans), data)
    assert not any(isinstance(t, BandedTable) for t in model.embedding.tables.values())  # nothing swapped


def test_refusals_counts_compressed_empty(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    with pytest.raises(
        CompressionError, match="plans.user: use_counts is true but the dataset has no training"
    ):
        ctrzip.compress(model, MixedConfig(plans={"user": PLANS["user"]}), None)
    ctrzip.compress(model, Int8Config(fields=("user",), first_order=False), data)
    with pytest.raises(
        CompressionError, match=r"plans.user: field 'user' is already compressed \(RowwiseQuantTable\)"
    ):
        ctrzip.compress(model, MixedConfig(plans={"user": PLANS["user"]}), data)
    with pytest.raises(
        CompressionError, match="mixed: plans is empty; give a band plan for at least one field"
    ):
        ctrzip.compress(model, MixedConfig(), data)
    with pytest.raises(ConfigError, match=r"plan.yaml: plans.item\[0\].bits is not a field of BandSpec"):
        from_dict(MixedConfig, {"plans": {"item": [{"start": 0, "end": 60, "bits": 8}]}}, source="plan.yaml")
    assert MixedConfig(plans={"x": [BandSpec(0, 2, "float")]}).plans["x"][0] == BandSpec(0, 2, "float")


def test_cli_compress_mixed(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    art = tmp_path / "model"
    ctrzip.save(art, make_model("deepfm"))
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"plans": PLANS, "eval_split": None}))
    out = tmp_path / "out"
    args = ["compress", "--method", "mixed", "--model", str(art), "--data", str(data.root), "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--config", str(plan)])
    assert res.exit_code == 0, res.output
    assert "BandedTable" in (out / "manifest.json").read_text()
    assert isinstance(ctrzip.load(out).embedding.tables["item"], BandedTable)
    plan.write_text(yaml.safe_dump({"plans": {"item": [{"start": 0, "end": 60, "representation": "hash"}]}}))
    res = CliRunner().invoke(app, [*args, "--config", str(plan), "--overwrite"])
    assert res.exit_code == 2  # a user error: one error line
    assert "unknown representation 'hash'" in (res.output + str(res.exception)).replace("\n", "")
