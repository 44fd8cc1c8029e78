"""size_report against a hand count and against the tensors ``ctrzip.save`` writes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ctrzip.compression.sizes import MB, format_size_report, size_report, stored_bytes
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
    """Test table: uint8 codes buffer + a tiny codebook; it claims a packed size in ``nbytes``."""

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


def test_sizes_count_what_is_stored_not_what_tables_claim(tiny_schema, tmp_path) -> None:
    """A table's own ``nbytes()`` claim (packed codes) is not the stored size: the codes buffer is."""
    from safetensors.torch import load_file

    from ctrzip.export.artifact import save

    model = build_model("deepfm", tiny_schema, {"embedding_dim": 4, "mlp": [8]})
    before = size_report(model)
    model.embedding.tables["item"] = _CodesTable(120, 4)
    rep = size_report(model)
    stored = 120 * 1 + 4 * 4 * 4  # uint8 codes + fp32 codebook
    assert (
        rep["tables"]["embedding.tables.item"]["bytes"] == stored != model.embedding.tables["item"].nbytes()
    )
    delta = 120 * 4 * 4 - stored
    assert rep["components"]["embedding"]["bytes"] == before["components"]["embedding"]["bytes"] - delta
    assert rep["components"]["dense"] == before["components"]["dense"]  # codes are not "dense"
    save(tmp_path / "a", model)
    on_disk = load_file(str(tmp_path / "a" / "model.safetensors"))
    assert (
        rep["total"]["bytes"]
        == stored_bytes(model)
        == sum(t.numel() * t.element_size() for t in on_disk.values())
    )


def test_format_size_report_lists_components(tiny_schema) -> None:
    rep = size_report(build_model("deepfm", tiny_schema, {"embedding_dim": 4, "mlp": [8]}))
    text = format_size_report(rep, tables=True)
    lines = text.splitlines()
    assert lines[0].split() == ["component", "params", "bytes", "MB"]
    assert [ln.split()[0] for ln in lines[1:4]] == ["embedding", "first_order", "dense"]
    assert lines[-1].split()[2] == f"{rep['total']['bytes']:,}"
    assert "embedding.tables.user (DenseTable)" in text
