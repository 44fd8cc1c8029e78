"""Exports of every compression method (ONNX and torch.export) reproduce PyTorch's probabilities.

Each chain compresses a tiny DeepFM (first-order term, a folded consumer, a sequence field) with
two or three methods in a row (the table baselines each on one field), so nine models cover every
registered method and every swappable module type, both pruning formats included; each is
exported once per format (module-scoped) and checked here again, outside the exporter's own
parity check, on a batch size the tracer never saw. The dense model's exports
are checked end to end in ``test_export_cli.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from compression.test_compose import _NO_FT, METHOD_CONFIGS, _model, _schema, _split

from ctrzip.compression import compress
from ctrzip.compression.api import METHODS, method_for
from ctrzip.compression.baselines import (
    CCEConfig,
    DHEConfig,
    HashingConfig,
    MixedDimConfig,
    PruneConfig,
    QRConfig,
)
from ctrzip.data.batch import Batch
from ctrzip.data.dataset import save_counts, save_split
from ctrzip.export.exporter import FORMATS, TOLERANCE, export_model, parity_path
from ctrzip.export.graph import random_batch
from ctrzip.export.plain import PLAIN_FORMS
from ctrzip.models.base import CTRModel, build_model
from ctrzip.nn.swappable import SWAPPABLE

CHAINS: dict[str, tuple[str, ...]] = {
    "mec+lowrank_mlp+linear_int8": ("mec", "lowrank_mlp", "linear_int8"),
    "lowrank_emb+fp16": ("lowrank_emb", "fp16"),
    "tt+int8": ("tt", "int8"),
    "mixed+int4+svd": ("mixed", "int4", "svd"),
    "pq+rowwise": ("pq", "rowwise"),
    "int2+budget": ("int2", "budget"),
    # the table baselines replace whole tables, so each takes its own field: two or three per model
    "hashing+qr+prune_row": ("hashing@big", "qr@tags", "prune_row@small"),
    "mixed_dim+dhe": ("mixed_dim@big", "dhe@tags"),
    "prune+cce": ("prune@big", "cce@tags"),
}
# baseline steps on one field ("method@field"); the others are METHOD_CONFIGS' tiny configs
STEP_CONFIGS = {
    "hashing@big": lambda: HashingConfig(fields=("big",), **_NO_FT),
    "qr@tags": lambda: QRConfig(fields=("tags",), **_NO_FT),
    "prune_row@small": lambda: PruneConfig(fields=("small",), granularity="row", **_NO_FT),
    "mixed_dim@big": lambda: MixedDimConfig(fields=("big",), **_NO_FT),
    "dhe@tags": lambda: DHEConfig(fields=("tags",), distill_steps=3, distill_batch_size=64, **_NO_FT),
    "prune@big": lambda: PruneConfig(fields=("big",), granularity="element", **_NO_FT),
    "cce@tags": lambda: CCEConfig(fields=("tags",), kmeans_iters=3, **_NO_FT),
}


def _config(step: str):  # type: ignore[no-untyped-def]
    return STEP_CONFIGS[step]() if step in STEP_CONFIGS else METHOD_CONFIGS[step]()


SUFFIX = {"onnx": "onnx", "torch-export": "pt2"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export-data")
    s, rng = _schema(), np.random.default_rng(0)
    train, valid = _split(s, 600, rng), _split(s, 200, rng)
    s.save(root / "feature_map.json")
    save_split(root, "train", train)
    save_split(root, "valid", valid)
    sl = s.sparse_slices()
    counts = {
        f.name: np.bincount(np.asarray(train.sparse[:, sl[f.name]]).ravel(), minlength=f.vocab_size)
        for f in s.sparse_fields
    }
    save_counts(root / "counts.npz", counts)
    return root


@pytest.fixture(scope="module")
def models(data: Path) -> dict[str, CTRModel]:
    from ctrzip.data.dataset import EncodedDataset

    ds = EncodedDataset.open(data)
    out = {}
    for name, chain in CHAINS.items():
        model = _model()
        for method in chain:
            compress(model, _config(method), ds)
        out[name] = model.eval()
    return out


@pytest.fixture(scope="module")
def exported(models: dict[str, CTRModel], data: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """(chain, format) -> (file, record), each exported once, lazily."""
    root, cache = tmp_path_factory.mktemp("exports"), {}

    def get(name: str, fmt: str) -> tuple[Path, dict]:
        if (name, fmt) not in cache:
            out = root / f"{name}.{SUFFIX[fmt]}"
            cache[name, fmt] = (out, export_model(models[name], out, fmt, data=data, split="valid"))
        return cache[name, fmt]

    return get


def _types(model: torch.nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules()}


def test_chains_cover_every_method_and_every_swappable_type(models: dict[str, CTRModel]) -> None:
    keys = {method_for(_config(m)).key for chain in CHAINS.values() for m in chain}
    assert keys == set(METHODS.keys()), "add each new method to a chain of CHAINS"
    for name, chain in CHAINS.items():
        assert len(getattr(models[name], "compression_log", [])) == len(chain), name  # every step was applied
    seen = set().union(*(_types(m) for m in models.values()))
    assert set(SWAPPABLE.keys()) <= seen, f"no exported model holds {sorted(set(SWAPPABLE.keys()) - seen)}"
    pruned = {
        m.granularity
        for model in models.values()
        for m in model.modules()
        if type(m).__name__ == "PrunedTable"
    }
    assert pruned == {"element", "row"}  # CSR and kept-rows storage take different export paths


def _run_file(path: Path, fmt: str, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Run an exported file with its own runtime only (no ctrzip code)."""
    if fmt == "onnx":
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(sess.run(None, {"sparse": sparse.numpy(), "dense": dense.numpy()})[0])
    with path.open("rb") as f:
        program = torch.export.load(f).module()
    with torch.no_grad():
        return program(sparse, dense)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(CHAINS))
def test_export_matches_pytorch(name: str, fmt: str, models, exported) -> None:  # type: ignore[no-untyped-def]
    model = models[name]
    path, record = exported(name, fmt)
    # the exporter's own check: 200 real rows (all of valid) and one row, both under tolerance
    assert [c["rows"] for c in record["parity"]] == [200, 1]
    assert all(
        c["max_abs_diff"] < TOLERANCE and c["source"].endswith("split valid") for c in record["parity"]
    )
    assert json.loads(parity_path(path).read_text()) == json.loads(json.dumps(record))
    assert record["file_bytes"] == path.stat().st_size and record["compression"] == [
        method_for(_config(m)).key for m in CHAINS[name]
    ]
    # every module that needs an export-friendly form got one, and nothing else did
    need = {fqn for fqn, m in model.named_modules() if type(m).__name__ in PLAIN_FORMS}
    assert set(record["plain_forms"]) == need
    # independent check at batch sizes the tracer never saw (dynamic batch), ids 0 and OOV included
    for rows, seed in ((37, 11), (1, 12)):
        b = random_batch(model.schema, rows, seed=seed)
        ref = model.predict(Batch(b.sparse, b.dense, torch.zeros(rows)))
        got = _run_file(path, fmt, b.sparse, b.dense)
        assert got.dtype == torch.float32 and got.shape == (rows,)
        assert float((got - ref).abs().max()) < TOLERANCE


def _unpacked_code_bytes(model: torch.nn.Module) -> int:
    """Bytes the graph adds by holding PQ band codes unpacked (``PQBand`` unpacks them at load)."""
    return sum(
        m.codes.numel() * m.codes.element_size() - m.packed_codes.numel()
        for m in model.modules()
        if type(m).__name__ == "PQBand"
    )


@pytest.mark.parametrize("name", list(CHAINS))
def test_onnx_initializers_are_the_stored_bytes(name: str, models, exported) -> None:  # type: ignore[no-untyped-def]
    """Compressed tensors stay compressed in the file: no int8 weight or code table is folded
    into float32 constants (only PQ band codes grow, unpacked as documented)."""
    from onnx import numpy_helper

    from ctrzip.compression.sizes import stored_bytes

    model = models[name]
    path, _ = exported(name, "onnx")
    proto = onnx.load(str(path))
    graph_bytes = sum(numpy_helper.to_array(i).nbytes for i in proto.graph.initializer)
    allowed = stored_bytes(model) + _unpacked_code_bytes(model)
    assert graph_bytes <= allowed + 2048, (graph_bytes, allowed)  # + index constants (offsets, vocab)


def test_onnx_file_is_valid_with_dynamic_batch(exported) -> None:  # type: ignore[no-untyped-def]
    path, record = exported("mixed+int4+svd", "onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ins = {i.name: i.type.tensor_type for i in proto.graph.input}
    assert set(ins) == {"sparse", "dense"}
    assert (
        ins["sparse"].elem_type == onnx.TensorProto.INT64 and ins["dense"].elem_type == onnx.TensorProto.FLOAT
    )
    for t in ins.values():  # batch axis symbolic, feature axis fixed
        assert t.shape.dim[0].dim_param and not t.shape.dim[0].dim_value
    assert ins["sparse"].shape.dim[1].dim_value == _schema().sparse_width
    assert record["opset"] == next(o.version for o in proto.opset_import if o.domain == "")
    # int4 codes stay packed: the graph holds uint8 initializers no wider than the stored rows
    assert any(init.data_type == onnx.TensorProto.UINT8 for init in proto.graph.initializer)
    # no per-node debugging record (stack traces with the exporting machine's paths)
    assert not any(n.metadata_props for n in proto.graph.node)
    assert b"site-packages" not in path.read_bytes() and b"ctrzip/" not in path.read_bytes()


@pytest.mark.parametrize("name", ["pnn", "attentional_fm"])
def test_pair_product_models_export_and_still_predict(name: str, tmp_path: Path) -> None:
    """Tracing once poisoned a process-wide cache of pair indices with fake tensors."""
    torch.manual_seed(0)
    model = build_model(name, _schema(), {"embedding_dim": 4, "embedding_init_std": 0.1}).eval()
    b = random_batch(model.schema, 16, seed=1)
    batch = Batch(b.sparse, b.dense, torch.zeros(16))
    before = model.predict(batch)
    model.train()  # the exporter checks in eval mode and hands the caller's mode back
    record = export_model(model, tmp_path / "m.pt2", "torch-export")
    assert record["parity"][0]["max_abs_diff"] < TOLERANCE
    assert model.training
    assert torch.equal(model.eval().predict(batch), before)
    fresh = build_model(name, _schema(), {"embedding_dim": 4}).eval()  # a new model after tracing
    assert torch.isfinite(fresh.predict(batch)).all()
