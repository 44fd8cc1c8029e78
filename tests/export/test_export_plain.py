"""Export-friendly forms compute what the modules they stand for compute, and every swappable
type has a declared export path (a new type fails here until it gets one)."""

from __future__ import annotations

import pytest
import torch

import ctrzip.compression  # noqa: F401  (registers every swappable type)
from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.export import plain
from ctrzip.export.plain import (
    EXPORTS_AS_IS,
    PLAIN_FORMS,
    ExportError,
    PlainBandedTable,
    PlainRowwiseTable,
    PlainTTTable,
    plain_copy,
)
from ctrzip.models.base import build_model
from ctrzip.nn.embedding.banded import BandedTable
from ctrzip.nn.embedding.bands import BandSpec
from ctrzip.nn.embedding.rowwise import RowwiseQuantTable, dequantize_rows
from ctrzip.nn.embedding.tt import TTTable
from ctrzip.nn.swappable import SWAPPABLE, replace_module

V = 41


def _weight(d: int) -> torch.Tensor:
    return torch.randn(V, d, generator=torch.Generator().manual_seed(d)) * 2 + 0.5


def test_every_swappable_type_has_one_declared_export_path() -> None:
    registered = set(SWAPPABLE.keys())
    missing = sorted(registered - EXPORTS_AS_IS - set(PLAIN_FORMS))
    assert not missing, f"declare an export path for {missing} in ctrzip.export.plain"
    assert not EXPORTS_AS_IS & set(PLAIN_FORMS)
    assert (EXPORTS_AS_IS | set(PLAIN_FORMS)) <= registered  # no stale names


@pytest.mark.parametrize("bits", [16, 8, 4, 2])
@pytest.mark.parametrize("dim", [8, 7])  # 7: int4/int2 rows carry padding columns
def test_plain_rowwise_equals_the_quantized_operators(bits: int, dim: int) -> None:
    table = RowwiseQuantTable.from_dense(_weight(dim), bits)
    form = PlainRowwiseTable(table)
    ids = torch.tensor([[0, 1, 5], [V - 1, 7, 0]])
    with torch.no_grad():
        torch.testing.assert_close(form(ids), table(ids), rtol=0, atol=1e-6)  # the FBGEMM path on CPU
        got = form.materialize()
    # independent: the stored bytes unpacked by the table module's own plain-op routine
    want = table.fp16_rows.float() if bits == 16 else dequantize_rows(table.packed, bits, dim)
    want[0] = 0.0
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert form.nbytes() == table.nbytes()  # the same bytes, split differently


def test_plain_banded_equals_the_banded_table() -> None:
    plan = (BandSpec(0, 6, "float"), BandSpec(6, 14, "rowwise", {"bits": 4}),
            BandSpec(14, 30, "pq", {"M": 2, "K": 4}), BandSpec(30, V, "shared", {"S": 3}))  # fmt: skip
    table = BandedTable.from_dense(_weight(8), None, plan)
    form = PlainBandedTable(table)
    ids = torch.tensor([[0, 5, 6, 13], [14, 29, 30, V - 1]])
    with torch.no_grad():
        torch.testing.assert_close(form(ids), table(ids), rtol=0, atol=1e-6)
        torch.testing.assert_close(form.materialize(), table.materialize(), rtol=0, atol=1e-6)
    assert form.nbytes() == table.nbytes()


def test_plain_tt_equals_the_tt_table() -> None:
    table = TTTable.from_dense(_weight(8), tt_rank=3)
    form = PlainTTTable(table)
    ids = torch.tensor([[3, 3, 0], [V - 1, 1, 3]])  # repeated ids: the original de-duplicates
    with torch.no_grad():
        torch.testing.assert_close(form(ids), table(ids), rtol=0, atol=1e-6)
        torch.testing.assert_close(form.materialize(), table.materialize(), rtol=0, atol=1e-6)


def _schema() -> FeatureSchema:
    return FeatureSchema(
        fields=(
            FieldSpec("a", "categorical", vocab_size=V),
            FieldSpec("b", "sequence", vocab_size=V, max_len=3),
            FieldSpec("x", "dense", source="numeric"),
        )
    )


def test_plain_copy_swaps_only_a_copy() -> None:
    torch.manual_seed(0)
    model = build_model("deepfm", _schema(), {"embedding_dim": 8, "embedding_init_std": 0.5}).eval()
    replace_module(model, "embedding.tables.a", RowwiseQuantTable.from_dense(_weight(8), 4))
    replace_module(model, "embedding.tables.b", TTTable.from_dense(_weight(8), tt_rank=2))
    g = torch.Generator().manual_seed(1)
    batch = Batch(torch.randint(0, V, (9, 4), generator=g), torch.randn(9, 1, generator=g), torch.zeros(9))
    before = model.predict(batch)
    copy, swapped = plain_copy(model)
    assert swapped == {
        "embedding.tables.a": "RowwiseQuantTable -> PlainRowwiseTable",
        "embedding.tables.b": "TTTable -> PlainTTTable",
    }
    assert type(model.embedding.tables["a"]) is RowwiseQuantTable  # the original is untouched
    assert type(copy.embedding.tables["a"]) is PlainRowwiseTable
    torch.testing.assert_close(copy.predict(batch), before, rtol=0, atol=1e-6)
    assert torch.equal(model.predict(batch), before)


def test_plain_copy_refuses_a_type_without_a_declared_path(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model("deepfm", _schema(), {"embedding_dim": 4})
    monkeypatch.setattr(plain, "EXPORTS_AS_IS", EXPORTS_AS_IS - {"DenseTable"})
    with pytest.raises(ExportError, match=r"module embedding\.tables\.a \(DenseTable\): no export path"):
        plain_copy(model)
