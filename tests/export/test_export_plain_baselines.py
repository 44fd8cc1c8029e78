"""The baseline tables' export-friendly forms (``ctrzip.export.plain_baselines``) compute what the
tables compute, hold the same bytes, and hash as Python's integers do in an ONNX graph."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from ctrzip.export.onnx import export_onnx
from ctrzip.export.plain import PLAIN_FORMS
from ctrzip.export.plain_baselines import PlainHashedTable, PlainPrunedTable
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.cce import CCETable
from ctrzip.nn.embedding.dhe import DHETable
from ctrzip.nn.embedding.hashed import PRIME, HashedTable
from ctrzip.nn.embedding.mixed_dim import MixedDimTable
from ctrzip.nn.embedding.pruned import PrunedTable
from ctrzip.nn.embedding.qr import QRTable

V, D = 53, 8


def _weight() -> Tensor:
    return torch.randn(V, D, generator=torch.Generator().manual_seed(0)) * 2 + 0.5


def _cce() -> CCETable:
    torch.manual_seed(0)
    table = CCETable(V, D, num_chunks=2, codebook_size=5, seed=3, init_std=0.5)
    assign = torch.randint(0, 5, (V, 2), generator=torch.Generator().manual_seed(1))
    table.set_clusters(assign, torch.randn(2, 5, D // 2))  # generation 1: a new hash g
    with torch.no_grad():
        table.hashed.normal_()
    return table


def _pruned_with_empty_rows() -> PrunedTable:
    w = _weight()
    w[10:20] = 1e-6  # rows whose every entry is pruned: zero-length CSR rows
    return PrunedTable.from_dense(w, "element", kept=150)


TABLES = {
    "hashed-universal": lambda: HashedTable.from_dense(_weight(), 7, seed=5),
    "hashed-identity": lambda: HashedTable.from_dense(_weight(), 7, hash="identity", padding_idx=None),
    "qr-mult": lambda: QRTable.from_dense(_weight(), 6),
    "qr-add": lambda: QRTable.from_dense(_weight(), 6, combine="add"),
    # blocks of dim 2 and 5 (projected) and 8 (no projection)
    "mixed_dim": lambda: MixedDimTable.from_dense(_weight(), [0, 4, 20, V], [8, 5, 2]),
    "dhe": lambda: DHETable(V, D, num_hashes=6, hidden=5, num_layers=2, buckets=1000, seed=2),
    "pruned-element": _pruned_with_empty_rows,
    "pruned-element-all": lambda: PrunedTable.from_dense(_weight(), "element", kept=V * D),
    "pruned-element-none": lambda: PrunedTable.from_dense(_weight(), "element", kept=0),
    "pruned-row": lambda: PrunedTable.from_dense(_weight(), "row", kept=13),
    "pruned-row-one": lambda: PrunedTable.from_dense(_weight(), "row", kept=1),
    "pruned-row-all": lambda: PrunedTable.from_dense(_weight(), "row", kept=V),
    "pruned-row-none": lambda: PrunedTable.from_dense(_weight(), "row", kept=0),
    "cce": _cce,
}


@pytest.mark.parametrize("name", list(TABLES))
def test_plain_form_equals_the_table(name: str) -> None:
    table: EmbeddingTable = TABLES[name]().eval()
    form = PLAIN_FORMS[type(table).__name__](table)
    ids = torch.tensor([[0, 1, 1, 4], [V - 1, 19, 20, 3], [52, 12, 0, 7]])  # padding, OOV, repeats
    with torch.no_grad():
        torch.testing.assert_close(form(ids), table(ids), rtol=0, atol=1e-6)
        torch.testing.assert_close(form.materialize(), table.materialize(), rtol=0, atol=1e-6)
        assert form(ids[:0]).shape == (0, 4, D)
    assert form.nbytes() == table.nbytes()
    # the graph holds the table's own tensors, nothing per id beyond them
    own = {id(t) for t in [*table.parameters(), *table.buffers()]}
    assert {id(t) for t in [*form.parameters(), *form.buffers()]} == own


def test_plain_pruned_row_search_finds_every_kept_id() -> None:
    """The unrolled binary search against ``torch.searchsorted`` for every R up to 40 (steps
    change at each power of two) on every id."""
    w = _weight()
    for kept in range(1, 41):
        table = PrunedTable.from_dense(w, "row", kept=kept)
        with torch.no_grad():
            got = PlainPrunedTable(table).materialize()
        want = torch.zeros(V, D)
        want[table.kept_ids.long()] = table.rows.detach()
        assert torch.equal(got, want), kept


class _Ids(nn.Module):
    """``(ids [B, n] int64, unused [B, 1]) -> table(ids)[..., 0]``: the exporter's calling form."""

    def __init__(self, table: nn.Module) -> None:
        super().__init__()
        self.table = table

    def forward(self, ids: Tensor, dense: Tensor) -> Tensor:
        return self.table(ids)[..., 0] + 0 * dense


def test_onnx_hash_equals_python_integers_at_the_largest_vocabulary(tmp_path: Path) -> None:
    """int64 ``(a i + b) mod P`` in ONNX Mul/Add/Mod at ids up to 2^31 - 2 (a V no table of
    stored rows could have: ``HashedTable`` stores only its B buckets) equals exact integers."""
    v, buckets = 2**31 - 1, 1009
    table = HashedTable(v, 1, buckets, seed=11, padding_idx=None)
    table.a, table.b = PRIME - 1, PRIME - 1  # the largest constants a seed can draw: a * id near 2^62
    with torch.no_grad():
        table.weight.copy_(torch.arange(buckets, dtype=torch.float32).unsqueeze(1))  # row b reads b
    module = _Ids(PlainHashedTable(table)).eval()
    path = tmp_path / "hash.onnx"
    export_onnx(module, (torch.tensor([[1, 2], [3, 4], [5, 6]]), torch.zeros(3, 1)), path, None)
    ids = torch.tensor([[0, 1], [v - 1, v - 2], [PRIME // 2, 2**30 + 7], [123456789, 2**31 - 100]])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"sparse": ids.numpy(), "dense": torch.zeros(4, 1).numpy()})[0]
    want = [[((table.a * int(i) + table.b) % PRIME) % buckets for i in row] for row in ids.tolist()]
    assert got.astype("int64").tolist() == want
    with torch.no_grad():  # and PyTorch's own lookup agrees
        assert table(ids)[..., 0].long().tolist() == want
