"""size_report against a hand count; compressed tables counted through nbytes()."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ctrzip.compression.sizes import MB, format_size_report, size_report
from ctrzip.models.base import build_model
from ctrzip.nn.embedding.base import EmbeddingTable


@pytest.mark.parametrize("batch_norm", [False, True])
def test_deepfm_matches_manual_count(tiny_schema, batch_norm: bool) -> None:
    dim, mlp = 4, [8, 6]
    model = build_model("deepfm", tiny_schema, {"embedding_dim": dim, "mlp": mlp, "batch_norm": batch_norm})
    rep = size_report(model)
    vocab = sum(f.vocab_size for f in tiny_schema.sparse_fields)
    n_dense = len(tiny_schema.dense_fields)
    comp = rep["components"]
    assert comp["embedding"]["params"] == vocab * dim + n_dense * dim
    assert comp["embedding"]["bytes"] == 4 * (vocab * dim + n_dense * dim)
    assert comp["first_order"]["bytes"] == 4 * (vocab + n_dense)
    linear = sum(i * o + o for i, o in zip([tiny_schema.num_fields * dim, *mlp], [*mlp, 1], strict=True))
    bn_params = 2 * sum(mlp) if batch_norm else 0
    bn_buffers = sum(2 * 4 * h + 8 for h in mlp) if batch_norm else 0  # running stats + int64 counter
    dense_params = linear + bn_params + 1  # + first-order bias
    assert comp["dense"]["params"] == dense_params
    assert comp["dense"]["bytes"] == 4 * dense_params + bn_buffers
    # totals add up, and every nn.Parameter is counted exactly once
    assert rep["total"]["params"] == sum(p.numel() for p in model.parameters())
    assert rep["total"]["bytes"] == sum(c["bytes"] for c in comp.values())
    assert rep["total"]["mb"] == pytest.approx(rep["total"]["bytes"] / MB)
    assert len(rep["tables"]) == 2 * len(tiny_schema.sparse_fields)
    assert rep["tables"]["embedding.tables.item"] == {
        "type": "DenseTable",
        "rows": 120,
        "dim": dim,
        "params": 120 * dim,
        "bytes": 120 * dim * 4,
    }


class _CodesTable(EmbeddingTable):
    """Test table: uint8 codes buffer + a tiny codebook; its nbytes is smaller than float storage."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = n, d
        self.register_buffer("codes", torch.zeros(n, dtype=torch.uint8))
        self.codebook = nn.Parameter(torch.randn(4, d))

    def forward(self, ids):
        return self.codebook[self.codes[ids.long()].long()]

    def materialize(self):
        return self.codebook[self.codes.long()]

    def nbytes(self) -> int:
        return self.num_embeddings // 4 + self.codebook.numel() * 4  # pretend 2-bit packing


def test_compressed_and_shared_tables_use_nbytes_once(tiny_schema) -> None:
    model = build_model("deepfm", tiny_schema, {"embedding_dim": 4, "mlp": [8]})
    before = size_report(model)
    shared = _CodesTable(120, 4)
    model.embedding.tables["item"] = shared
    model.embedding.tables["user"] = shared  # same module for two fields: counted once
    rep = size_report(model)
    delta = (50 + 120) * 4 * 4 - shared.nbytes()
    assert rep["components"]["embedding"]["bytes"] == before["components"]["embedding"]["bytes"] - delta
    assert rep["components"]["dense"] == before["components"]["dense"]  # codes are not "dense"
    assert len(rep["tables"]) == len(before["tables"]) - 1


def test_format_size_report_lists_components(tiny_schema) -> None:
    rep = size_report(build_model("deepfm", tiny_schema, {"embedding_dim": 4, "mlp": [8]}))
    text = format_size_report(rep, tables=True)
    lines = text.splitlines()
    assert lines[0].split() == ["component", "params", "bytes", "MB"]
    assert [ln.split()[0] for ln in lines[1:4]] == ["embedding", "first_order", "dense"]
    assert lines[-1].split()[2] == f"{rep['total']['bytes']:,}"
    assert "embedding.tables.user (DenseTable)" in text
