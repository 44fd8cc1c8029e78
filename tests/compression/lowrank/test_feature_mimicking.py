"""The ``lowrank`` method: targets, statistics from counts vs data, folding, config, pipeline."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ctrzip.compression import compress
from ctrzip.compression.calibrate import IdMaskedMoments, calibrate
from ctrzip.compression.lowrank.factorized import probe_batch
from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
from ctrzip.compression.lowrank.fold import FoldedLinear, bind_folds
from ctrzip.compression.select import mlp_linears
from ctrzip.compression.stats import table_moments
from ctrzip.config import ConfigError, from_dict, to_dict
from ctrzip.data.loader import BatchLoader
from ctrzip.models.base import CTRModel
from ctrzip.nn.embedding.lowrank import LowRankTable
from ctrzip.nn.lowrank_linear import LowRankLinear
from ctrzip.nn.swappable import SWAPPABLE

from ._lowrank_data import make_dataset, make_low_rank, make_model

FOLDED_MODELS = ["deepfm", "dcn", "dcnv2", "autoint", "gdcn", "pnn", "wide_deep"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_dataset(tmp_path_factory.mktemp("lowrank") / "ds")


def _logits(model: CTRModel, seed: int = 5) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(probe_batch(model.schema, 64, torch.device("cpu"), seed)).double()


def test_default_targets_are_hidden_linears_except_first_never_head() -> None:
    model = make_model("deepfm")
    assert list(mlp_linears(model)) == ["mlp.layers.2", "mlp.layers.4"]
    assert set(mlp_linears(model, skip_first=False)) == {"mlp.layers.0", "mlp.layers.2", "mlp.layers.4"}


def test_count_based_embedding_stats_equal_data_pass(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    schema = model.schema
    obs = {
        f"embedding.tables.{f.name}": IdMaskedMoments(0 if f.kind == "sequence" else None)
        for f in schema.sparse_fields
    }
    calibrate(model, obs, BatchLoader(data["train"], batch_size=100))
    for f in schema.sparse_fields:
        ignore = (0,) if f.kind == "sequence" else ()
        closed = table_moments(model.embedding.tables[f.name].materialize(), data.counts[f.name], ignore)
        seen = obs[f"embedding.tables.{f.name}"]
        assert closed.n == seen.n
        torch.testing.assert_close(closed.mean, seen.mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(closed.covariance(), seen.covariance(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", FOLDED_MODELS)
def test_folded_equals_unfolded_and_full_rank_is_lossless(name: str, data) -> None:  # type: ignore[no-untyped-def]
    model = make_low_rank(make_model(name), table_rank=2)  # rank 8 = D would never shrink
    ref = _logits(model)
    unfolded = copy.deepcopy(model)
    common = dict(
        mlp=False, embedding=True, embedding_rank=2, finetune_epochs=0, eval_split=None, device="cpu"
    )
    compress(unfolded, LowRankConfig(**common, fold=False), data)
    compress(model, LowRankConfig(**common), data)
    assert model.embedding_consumer() is not None
    rep = model.compression_log[-1]["report"]["embedding"]["fold"]
    assert rep["folded"] and set(rep["fields"]) == {"user", "item", "tags", "cat"}
    assert isinstance(model.get_submodule(rep["consumer"]), FoldedLinear)
    torch.testing.assert_close(_logits(model), _logits(unfolded), atol=1e-5, rtol=0)
    torch.testing.assert_close(_logits(unfolded), ref, atol=1e-4, rtol=0)  # the tables' full rank (2)


@pytest.mark.parametrize("name", ["nfm", "fibinet"])
def test_models_without_consumer_are_never_folded(name: str, data) -> None:  # type: ignore[no-untyped-def]
    model = make_low_rank(make_model(name), table_rank=2)
    assert model.embedding_consumer() is None
    ref = _logits(model)
    cfg = LowRankConfig(
        mlp=False, embedding=True, embedding_rank=2, finetune_epochs=0, eval_split=None, device="cpu"
    )
    compress(model, cfg, data)
    assert not any(isinstance(m, FoldedLinear) for m in model.modules())
    assert model.compression_log[-1]["report"]["embedding"]["fold"]["folded"] is False
    torch.testing.assert_close(_logits(model), ref, atol=1e-4, rtol=0)


def test_folded_low_rank_model_and_deepcopy_agree(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    cfg = LowRankConfig(
        mlp=False, embedding=True, embedding_rank=2, finetune_epochs=0, eval_split=None, device="cpu"
    )
    compress(model, cfg, data)
    clone = copy.deepcopy(model)
    torch.testing.assert_close(_logits(clone), _logits(model))
    fl = model.get_submodule("mlp.layers.0")
    assert fl.weight.shape[1] == 4 * 3 + 8 + 1 * 0  # user/item/tags/cat codes (k+1=3), price: D=8
    rebuilt = SWAPPABLE.get("FoldedLinear").empty(**fl.spec())
    rebuilt.load_state_dict(fl.state_dict())
    clone.mlp.layers[0] = rebuilt
    with pytest.raises(RuntimeError, match="bind_folds"):
        _logits(clone)
    assert bind_folds(clone) == 1
    torch.testing.assert_close(_logits(clone), _logits(model))


def test_mlp_full_rank_is_lossless_and_energy_reported(data) -> None:  # type: ignore[no-untyped-def]
    # rank-4 weights: rank 4 is the layers' full rank and still smaller (rank 16 never is)
    model = make_low_rank(
        make_model("dcnv2", mlp=[16, 16, 16]), linears={"mlp.layers.2": 4, "mlp.layers.4": 4}
    )
    ref_model = copy.deepcopy(model)
    cfg = LowRankConfig(rank=4, finetune_epochs=0, eval_split=None, batch_size=128, device="cpu")
    compress(model, cfg, data)
    layers = model.compression_log[-1]["report"]["mlp"]["layers"]
    assert set(layers) == {"mlp.layers.2", "mlp.layers.4"}
    assert all(abs(v["energy_kept"] - 1.0) < 1e-9 for v in layers.values())
    assert isinstance(model.get_submodule("mlp.layers.2"), LowRankLinear)
    # exact on the calibration data's subspace: compare on real rows
    batch = next(iter(BatchLoader(data["valid"], batch_size=64)))
    with torch.no_grad():
        torch.testing.assert_close(model(batch), ref_model.eval()(batch), atol=1e-4, rtol=0)


def test_config_round_trip_and_validation() -> None:
    cfgs = [
        LowRankConfig(),
        LowRankConfig(rank=None, variance=0.9, embedding=True, embedding_fields=("user", "it*")),
        LowRankConfig(
            mlp=False, embedding=True, embedding_rank=None, embedding_variance=0.5, relu_between=True
        ),
    ]
    for c in cfgs:
        assert from_dict(LowRankConfig, to_dict(c)) == c
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LowRankConfig(rank=0)
    with pytest.raises(ValueError, match="not both"):
        LowRankConfig(rank=8, variance=0.9)
    with pytest.raises(ValueError, match="variance"):
        LowRankConfig(rank=None, variance=1.5)
    with pytest.raises(ValueError, match="nothing to compress"):
        LowRankConfig(mlp=False)
    with pytest.raises(ConfigError, match="did you mean rank"):
        from_dict(LowRankConfig, {"rnak": 3})
    with pytest.raises(ConfigError):
        from_dict(LowRankConfig, {"bias_form": "weird"})


def test_pipeline_mlp_then_embedding_with_finetuning(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    model = make_model("deepfm")
    params_before = sum(p.numel() for p in model.parameters())
    cfg = LowRankConfig(
        rank=4,
        relu_between=True,
        embedding=True,
        embedding_rank=2,
        finetune_batch_size=128,
        lr=1e-3,
        device="cpu",
    )
    compress(model, cfg, data)
    rep = model.compression_log[-1]["report"]
    for step in ("mlp", "embedding"):
        assert {"direct", "finetuned", "finetune"} <= set(rep[step])
        assert 0.0 <= rep[step]["finetuned"]["auc"] <= 1.0
    assert rep["embedding"]["fold"]["folded"]
    assert rep["params_after"] < params_before
    assert sum(p.numel() for p in model.parameters()) == rep["params_after"]
    assert isinstance(model.embedding.tables["user"], LowRankTable)


def test_embedding_stats_from_data_pass_match_counts(data) -> None:  # type: ignore[no-untyped-def]
    a, b = make_model("deepfm"), make_model("deepfm")
    base = dict(mlp=False, embedding=True, embedding_rank=3, finetune_epochs=0, eval_split=None, device="cpu")
    compress(a, LowRankConfig(**base), data)
    compress(b, LowRankConfig(**base, embedding_stats="data", batch_size=100), data)
    torch.testing.assert_close(_logits(a), _logits(b), atol=1e-5, rtol=0)


def test_mlp_compression_ignores_table_types(data) -> None:  # type: ignore[no-untyped-def]
    """Composes with MEC: the MLP step works whatever the tables are (here PQ tables)."""
    pq = pytest.importorskip("ctrzip.nn.embedding.pq")
    model = make_model("deepfm")
    for f in model.schema.sparse_fields:
        old = model.embedding.tables[f.name]
        codes = torch.randint(0, 4, (f.vocab_size, 2))
        model.embedding.tables[f.name] = pq.PQTable.from_codebooks(codes, torch.randn(2, 4, 4) * 0.1)
        assert old.embedding_dim == 8
    compress(model, LowRankConfig(rank=4, finetune_epochs=0, eval_split=None, device="cpu"), data)
    assert isinstance(model.get_submodule("mlp.layers.4"), LowRankLinear)
    assert isinstance(model.embedding.tables["user"], pq.PQTable)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pipeline_on_cuda_matches_cpu(data) -> None:  # type: ignore[no-untyped-def]
    cpu, gpu = make_model("deepfm"), make_model("deepfm")
    base = dict(rank=4, embedding=True, embedding_rank=2, finetune_epochs=0, eval_split=None, batch_size=128)
    compress(cpu, LowRankConfig(**base, device="cpu"), data)
    compress(gpu, LowRankConfig(**base, device="cuda"), data)
    assert next(gpu.parameters()).device.type == "cuda"
    batch = probe_batch(cpu.schema, 64, torch.device("cpu"), 1)
    with torch.no_grad():
        ref = cpu.eval()(batch)
        got = gpu.eval()(batch.to(torch.device("cuda"))).cpu()
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_artifact_round_trip_of_folded_model(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ctrzip.export import artifact  # load() must bind folded consumers by itself

    model = make_model("deepfm")
    cfg = LowRankConfig(
        rank=4, embedding=True, embedding_rank=2, finetune_epochs=0, eval_split=None, device="cpu"
    )
    compress(model, cfg, data)
    artifact.save(tmp_path / "art", model)
    loaded = artifact.load(tmp_path / "art")
    assert isinstance(loaded.get_submodule("mlp.layers.2"), LowRankLinear)
    torch.testing.assert_close(_logits(loaded), _logits(model), atol=1e-6, rtol=0)
