"""One size: ``size_report`` / ``byte_breakdown`` / method reports equal the tensors ``ctrzip.save``
writes, for dense, MEC, lowrank, SVD, TT and the table-baseline models with BatchNorm; the file
size is reported beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ctrzip.compression import compress
from ctrzip.compression.baselines import (
    CCEConfig,
    DHEConfig,
    HashingConfig,
    MixedDimConfig,
    PruneConfig,
    QRConfig,
)
from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
from ctrzip.compression.lowrank.svd import SVDConfig
from ctrzip.compression.lowrank.tt import TTConfig
from ctrzip.compression.mec.method import MECConfig
from ctrzip.compression.shrink import module_bytes
from ctrzip.compression.sizes import byte_breakdown, size_report, stored_bytes
from ctrzip.export.artifact import artifact_sizes, save
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.embedding.pq import PQTable, SharedCodesPQTable

from .lowrank._lowrank_data import make_dataset, make_model

FAST = {"kmeans_iters": 3}
CONFIGS = {
    "dense": None,
    "mec": MECConfig.variant(  # weighted k-means: the MEC family's fastest code learner
        "weighted_kmeans",
        num_subspaces=2,
        codebook_size=4,
        min_vocab=20,
        protocol="none",
        plugin_per_field=False,
        device="cpu",
        **FAST,
    ),  # fmt: skip
    "lowrank": LowRankConfig(
        rank=4, embedding=True, embedding_rank=2, finetune_epochs=0, eval_split=None, device="cpu"
    ),
    "svd": SVDConfig(
        rank=4, embedding=True, embedding_rank=2, finetune_epochs=0, eval_split=None, device="cpu"
    ),
    "tt": TTConfig(tt_rank=2, min_vocab=50, finetune_epochs=0, eval_split=None, device="cpu"),
    **{  # the table baselines
        name: cls(min_vocab=20, finetune_epochs=0, eval_split=None, device="cpu", **extra)
        for name, cls, extra in (
            ("hashing", HashingConfig, {}),
            ("qr", QRConfig, {"ratio": 2.0}),
            ("mixed_dim", MixedDimConfig, {}),
            ("dhe", DHEConfig, {"distill_steps": 2, "distill_batch_size": 32}),
            ("prune", PruneConfig, {"granularity": "row"}),
            ("cce", CCEConfig, {"ratio": 2.0, "num_chunks": 2, "kmeans_iters": 3}),
        )
    },
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_dataset(tmp_path_factory.mktemp("sizes") / "ds")


@pytest.mark.parametrize("method", list(CONFIGS))
def test_reported_size_equals_saved_tensors_and_file_size_is_reported(
    method: str, data, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm", batch_norm=True)  # BatchNorm buffers: what model_bytes used to miss
    if CONFIGS[method] is not None:
        compress(model, CONFIGS[method], data)
    out = save(tmp_path / method, model)
    on_disk = load_file(str(out / "model.safetensors"))
    file_tensor_bytes = sum(t.numel() * t.element_size() for t in on_disk.values())
    assert any(k.endswith("running_mean") for k in on_disk)
    rep = size_report(model)
    assert rep["total"]["bytes"] == stored_bytes(model) == byte_breakdown(model)["total"] == file_tensor_bytes
    manifest = json.loads((out / "manifest.json").read_text())
    sizes = artifact_sizes(out)
    assert manifest["storage"]["tensor_bytes"] == sizes["tensor_bytes"] == file_tensor_bytes
    assert manifest["storage"]["safetensors_file_bytes"] == (out / "model.safetensors").stat().st_size
    assert sizes["files"]["model.safetensors"] > file_tensor_bytes  # + the safetensors header
    assert sizes["disk_bytes"] == sum(f.stat().st_size for f in out.iterdir())
    if CONFIGS[method] is not None:
        report = model.compression_log[-1]["report"]
        assert report["bytes"]["after"] == file_tensor_bytes < report["bytes"]["before"]
    # every table's own nbytes() is its stored tensors
    for fqn, table in model.named_modules():
        if isinstance(table, EmbeddingTable):
            assert table.nbytes() == module_bytes(table), fqn


def test_mec_report_counts_batchnorm_and_shared_codes_once(data) -> None:  # type: ignore[no-untyped-def]
    """Kind 7's example: MEC's reported size agrees with size_report and the saved tensors."""
    model = make_model("deepfm", batch_norm=True)
    bn = sum(
        t.numel() * t.element_size()
        for k, t in model.state_dict().items()
        if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert bn > 0
    compress(model, CONFIGS["mec"], data)
    report = model.compression_log[-1]["report"]
    assert report["sizes"]["total"] == size_report(model)["total"]["bytes"] == stored_bytes(model)
    assert report["sizes_before"]["total"] == report["bytes"]["before"]
    assert report["sizes"]["network"] >= bn
    # codes stored once although the first-order tables read them too: V * M uint8 per field
    lr = model.first_order.embedding.tables
    assert isinstance(lr["item"], SharedCodesPQTable) and isinstance(model.embedding.tables["item"], PQTable)
    assert report["sizes"]["codes"] == (30 + 60) * 2 == size_report(model)["parts"]["codes"]
    # bit-packed codes are a projection beside the stored figure, never the stored total
    packed = -(-30 * 2 * 2 // 8) + -(-60 * 2 * 2 // 8)  # K = 4: 2 bits per code
    assert report["sizes"]["codes_packed_projection"] == packed
    assert report["sizes"]["total_packed_projection"] == report["sizes"]["total"] - 180 + packed
    assert report["ratio"] == pytest.approx(report["bytes"]["before"] / report["bytes"]["after"])


def test_byte_breakdown_network_is_everything_outside_tables(tiny_schema) -> None:
    from ctrzip.models.base import build_model

    model = build_model("deepfm", tiny_schema, {"embedding_dim": 4, "mlp": [8, 6], "batch_norm": True})
    bb = byte_breakdown(model)
    tables = sum(
        module_bytes(m)
        for fqn, m in model.named_modules()
        if fqn.startswith(("embedding", "first_order")) and type(m).__name__ == "FieldEmbedding"
    )
    assert bb["network"] == stored_bytes(model) - tables
    assert bb["embedding"] + bb["first_order"] == tables and bb["codes"] == bb["codebooks"] == 0
    with torch.no_grad():
        assert bb["network"] == size_report(model)["components"]["dense"]["bytes"]
