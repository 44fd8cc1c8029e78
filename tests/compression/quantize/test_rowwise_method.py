"""Methods rowwise/fp16/int8/int4/int2: swap, shrink rule, report, artifact round trip."""

from __future__ import annotations

import pytest
import torch

import ctrzip
from ctrzip.compression.lowrank.factorized import probe_batch
from ctrzip.compression.quantize import FP16Config, Int2Config, Int4Config, Int8Config, RowwiseConfig
from ctrzip.compression.sizes import size_report
from ctrzip.errors import CompressionError
from ctrzip.models.base import build_model
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.rowwise import RowwiseQuantTable

from ..lowrank._lowrank_data import make_dataset, make_model, schema


@pytest.fixture(scope="module")
def data(tmp_path_factory):  # type: ignore[no-untyped-def]
    return make_dataset(tmp_path_factory.mktemp("rowwise"))


def _predict(model, batch):  # type: ignore[no-untyped-def]
    model.eval()
    with torch.no_grad():
        return model(batch)


@pytest.mark.parametrize("config", [FP16Config(), Int8Config(), Int4Config(), Int2Config()])
def test_compress_save_load_identical(config, data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    before = size_report(model)["total"]["bytes"]
    ctrzip.compress(model, config, data)
    report = model.compression_log[-1]["report"]
    kept = {d["target"]: d for d in report["targets"] if d["action"] == "kept"}
    # the 1-wide first-order tables only shrink at fp16 (int rows carry a scale and bias)
    first_order = [d for d in report["targets"] if not d["target"].startswith("embedding.")]
    assert first_order
    for d in first_order:
        assert (d["target"] in kept) == (config.bits != 16)
    assert report["bytes"]["before"] == before
    assert report["bytes"]["after"] == size_report(model)["total"]["bytes"] < before
    m = report["metrics"]
    assert m["before"]["n"] == m["direct"]["n"] == 256 and m["final"] == m["direct"]
    if config.bits >= 8:  # fine rows barely move the scores
        assert abs(m["direct"]["auc"] - m["before"]["auc"]) < 0.01
    assert isinstance(model.embedding.tables["item"], RowwiseQuantTable)
    batch = probe_batch(data.schema, 64, torch.device("cpu"))
    expect = _predict(model, batch)
    ctrzip.save(tmp_path / "m", model)
    loaded = ctrzip.load(tmp_path / "m")
    torch.testing.assert_close(_predict(loaded, batch), expect, rtol=0, atol=0)


def test_nothing_shrinks_is_an_error(data) -> None:  # type: ignore[no-untyped-def]
    model = build_model("lr", schema(), {})  # only 1-wide tables: int8 rows are 9 B against 4 B
    with pytest.raises(CompressionError, match="nothing would be compressed") as err:
        ctrzip.compress(model, Int8Config(), data)
    # the shared rule's error: each kept table with its reason, and every decision attached
    kept = err.value.targets  # type: ignore[attr-defined]
    assert {d["target"] for d in kept} == {f"embedding.tables.{f.name}" for f in schema().sparse_fields}
    assert all(d["action"] == "kept" and d["bytes_after"] == d["bytes_before"] for d in kept)
    v = schema()["item"].vocab_size
    assert f"embedding.tables.item: 8-bit rows would not be smaller: {9 * v:,} B >= {4 * v:,} B" in str(
        err.value
    )


def test_listed_field_that_cannot_shrink_is_refused(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    ctrzip.compress(model, Int8Config(fields=("user",)), data)
    listed = "'user' listed in fields cannot be compressed: already compressed"
    with pytest.raises(CompressionError, match=listed):
        ctrzip.compress(model, Int4Config(fields=("user",)), data)


def test_preset_bits_cannot_be_overridden() -> None:
    with pytest.raises(CompressionError, match="Int4Config fixes bits=4"):
        Int4Config(bits=8)
    assert RowwiseConfig(bits=4).bits == 4


def test_unlisted_compressed_tables_are_kept_with_reason(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    ctrzip.compress(model, Int8Config(fields=("item",)), data)
    ctrzip.compress(model, Int4Config(first_order=False), data)
    report = model.compression_log[-1]["report"]
    item = next(d for d in report["targets"] if d["target"] == "embedding.tables.item")
    assert item["action"] == "kept" and "already compressed" in item["reason"]
    assert model.embedding.tables["item"].bits == 8 and model.embedding.tables["user"].bits == 4
    assert all(type(t) is not DenseTable for t in model.embedding.tables.values())
