"""Byte projection to another vocabulary: identity at the model's own size, exact scaling."""

from __future__ import annotations

import pytest
import torch

import ctrzip
from ctrzip.compression.budget.projection import project_bytes, table_bytes_at
from ctrzip.compression.mixed import MixedConfig
from ctrzip.compression.quantize import Int4Config, LinearInt8Config
from ctrzip.compression.sizes import stored_bytes
from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.bands import BandSpec
from ctrzip.nn.embedding.base import DenseTable

from ..lowrank._lowrank_data import make_dataset, make_model


@pytest.fixture(scope="module")
def data(tmp_path_factory):  # type: ignore[no-untyped-def]
    return make_dataset(tmp_path_factory.mktemp("proj"))


def _vocab(model, scale: float = 1.0) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {n: round(t.num_embeddings * scale) for n, t in model.embedding.tables.items()}


PLAN = {"item": (BandSpec(0, 10, "rowwise", {"bits": 8}), BandSpec(10, 59, "pq", {"M": 2, "K": 8}),
                 BandSpec(59, 60, "float"))}  # fmt: skip


@pytest.mark.parametrize("configs", [[], [Int4Config(eval_split=None)], [LinearInt8Config(eval_split=None)],
                                     [MixedConfig(plans=PLAN, eval_split=None)]])  # fmt: skip
def test_projection_at_the_own_vocabulary_is_the_stored_size(configs, data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    for cfg in configs:
        ctrzip.compress(model, cfg, data)
    assert project_bytes(model, _vocab(model)) == stored_bytes(model)


def test_dense_and_rowwise_scale_exactly(data) -> None:  # type: ignore[no-untyped-def]
    dense = make_model("deepfm")
    quant = ctrzip.compress(make_model("deepfm"), Int4Config(eval_split=None), data)
    for model, per_row in ((dense, 8 * 4), (quant, 4 + 4)):  # int4 of D=8: 4 code bytes + scale/bias
        grown = project_bytes(model, _vocab(model, 10.0)) - project_bytes(model, _vocab(model))
        extra_rows = sum(9 * t.num_embeddings for t in model.embedding.tables.values())
        first_order = 9 * sum(t.num_embeddings for t in model.first_order.embedding.tables.values()) * 4
        # first-order tables (1-wide) stay float32 under int4 (not smaller): 4 B per extra row
        assert grown == extra_rows * per_row + first_order


def test_banded_keeps_band_shares_and_single_id_bands() -> None:
    from ctrzip.nn.embedding.banded import BandedTable

    table = BandedTable.from_dense(torch.randn(60, 8), None, PLAN["item"])
    at = table_bytes_at(table, 600)
    # 10/59 and 49/59 of the 599 non-single ids; the OOV band stays one float row
    head, tail = round(10 * 599 / 59), round(49 * 599 / 59)
    expect = head * (8 + 8) + (-(-tail * 2 * 3 // 8)) + 8 * 8 * 4 + 8 * 4
    assert at == expect


def test_missing_field_and_unknown_table_are_refused(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    with pytest.raises(CompressionError, match=r"no vocabulary size for fields \['cat'"):
        project_bytes(model, {"user": 10, "item": 10, "tags": 10})

    class NoRuleTable(DenseTable):  # a table type without a projection rule
        pass

    with pytest.raises(CompressionError, match="no byte projection for NoRuleTable"):
        table_bytes_at(NoRuleTable(40, 8), 100)
    assert table_bytes_at(DenseTable(5, 3), 7) == 7 * 3 * 4
