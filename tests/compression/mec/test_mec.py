"""MEC method: configs, stage-1 outputs and folding, compress() end to end with both protocols."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from ctrzip.compression import compress
from ctrzip.compression.mec.fields import select_fields
from ctrzip.compression.mec.method import VARIANTS, MECConfig, PQConfig
from ctrzip.compression.mec.stage1 import CodeLearningConfig, _Coder, _replace_dead, fit_codes
from ctrzip.compression.mec.stage2 import StageTwoConfig
from ctrzip.compression.sizes import byte_breakdown as model_bytes
from ctrzip.config import ConfigError, from_dict, to_dict
from ctrzip.errors import CompressionError
from ctrzip.models.base import build_model
from ctrzip.nn.embedding.pq import PQTable, SharedCodesPQTable, bind_shared_codes
from ctrzip.nn.swappable import SWAPPABLE
from ctrzip.train import TrainConfig, Trainer, evaluate

from ._mec_data import make_mec_dataset, one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"steps": 30, "batch_size": 128, "kmeans_iters": 5, "num_negatives": 4}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_config_round_trip_for_every_variant(name):
    c = MECConfig.variant(name, num_subspaces=2, steps=7, fields=("a", "b"))
    assert from_dict(MECConfig, to_dict(c)) == c
    assert c.code_learning.steps == 7
    p = PQConfig()
    assert from_dict(PQConfig, to_dict(p)) == p
    assert p.code_learning.alpha == 0 and p.code_learning.weighting == "none"


def test_config_validation():
    with pytest.raises(ValueError):
        MECConfig(num_subspaces=0)
    with pytest.raises(ValueError):
        CodeLearningConfig(quantizer="opq")
    with pytest.raises(ValueError):
        CodeLearningConfig(rho=0.0)
    with pytest.raises(ConfigError, match="not a field"):
        from_dict(MECConfig, {"code_learning": {"alpah": 1.0}})
    with pytest.raises(KeyError):
        MECConfig.variant("nope")


def _table(n=600, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) * 0.01
    counts = torch.randint(0, 200, (n,), generator=g)
    return x, counts


@pytest.mark.parametrize(
    "overrides",
    [{}, {"encoder": "identity", "steps": 0}, {"quantizer": "rq"}, {"quantizer": "aq"}, {"beta": 0.0}],
)
def test_fit_codes_outputs_and_folded_table_reproduces_decoder(overrides):
    x, counts = _table()
    cfg = CodeLearningConfig(**{**FAST, **overrides})
    res = fit_codes(x, counts, 2, 16, cfg, seed=1)
    assert res.codes.shape == (600, 2) and int(res.codes.min()) >= 0 and int(res.codes.max()) < 16
    # the PQTable built from the folded codebooks decodes exactly what stage 1 decoded
    pad = torch.zeros(1, 2, dtype=torch.long)
    table = PQTable.from_codebooks(
        torch.cat([pad, res.codes, pad]), res.codebooks, res.layout, bias=res.bias, dense_ids=[601]
    )
    torch.testing.assert_close(table(torch.arange(1, 601)), res.decoded, atol=1e-5, rtol=1e-4)
    assert res.layout == cfg.layout
    assert float((res.decoded - x).pow(2).mean()) < float(x.pow(2).mean())  # better than zero


def test_encoder_is_trained_and_dead_codes_revived():
    x, counts = _table(n=400)
    res = fit_codes(x, counts, 2, 8, CodeLearningConfig(**{**FAST, "steps": 40}), seed=0)
    hist = res.history
    assert hist[0]["step"] == 1 and hist[-1]["step"] == 40
    assert all(k in hist[-1] for k in ("vq", "commit", "recon", "reg", "con"))
    assert res.encoder_change > 0  # the STE gives the encoder a gradient
    ident = fit_codes(x, counts, 2, 8, CodeLearningConfig(**{**FAST, "encoder": "identity"}), seed=0)
    assert ident.encoder_change == 0
    # dead codewords (unused over a window) move onto current targets of their sub-space
    coder = _Coder(4, torch.zeros(2, 3, 2), linear=False)
    usage = torch.tensor([[5.0, 0.0, 1.0], [0.0, 0.0, 2.0]])
    targets = torch.randn(10, 2, 2)
    assert _replace_dead(coder, usage, targets, torch.Generator().manual_seed(0)) == 3
    books = coder.books.detach()
    for m, k in ((0, 1), (1, 0), (1, 1)):
        assert any(torch.equal(books[m, k], targets[j, m]) for j in range(10))
    assert torch.equal(books[0, 0], torch.zeros(2)) and torch.equal(books[1, 2], torch.zeros(2))


def test_m_must_divide_width():
    x, counts = _table(d=6)
    with pytest.raises(ValueError, match="divide"):
        fit_codes(x, counts, 4, 8, CodeLearningConfig(**FAST))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    data = make_mec_dataset(tmp_path_factory.mktemp("mec"), vocab=300, rows=4000)
    model = build_model("deepfm", data.schema, {"embedding_dim": 8, "mlp": [16]})
    Trainer(TrainConfig(epochs=2, batch_size=256, lr=3e-3, progress=False, device="cpu")).fit(
        model, data["train"], data["valid"]
    )
    return data, model


def _cfg(**kw):
    base = {
        "min_vocab": 100,
        "num_subspaces": 2,
        "codebook_size": 16,
        "device": "cpu",
        "progress": False,
        **FAST,
    }
    return MECConfig.variant(kw.pop("variant", "mec"), **{**base, **kw})


def test_compress_plugin_only_report_and_sizes(trained):
    data, base = trained
    model = copy.deepcopy(base)
    before = model_bytes(model)
    compress(model, _cfg(protocol="none", select_every=10), data)
    rep = model.compression_log[-1]["report"]
    json.dumps(model.compression_log)  # the report is JSON-able
    sel = rep["fields"]["big"]["stage1"]["selected"]  # best plug-in state kept (k-means start included)
    assert sel["selected_step"] in (0, 10, 20, 30) and sel["plugin_auc"] >= rep["base"]["auc"] - 0.05
    assert set(rep["fields"]) == {"big"} and "small" in rep["skipped"]
    big = model.embedding.tables["big"]
    assert isinstance(big, PQTable) and big.codes.dtype == torch.uint8 and big.layout == "additive"
    assert isinstance(model.first_order.embedding.tables["big"], PQTable)  # LR weights from codes
    assert not isinstance(model.embedding.tables["small"], PQTable)
    # plug-in AUC is the swapped model's AUC; padding/OOV rows untouched
    assert rep["plugin"]["auc"] == pytest.approx(evaluate(model, data["valid"], device="cpu")["auc"])
    assert rep["fields"]["big"]["plugin"]["auc"] == pytest.approx(rep["plugin"]["auc"])  # only one field
    dense_big = base.embedding.tables["big"].weight.detach()
    assert torch.equal(big(torch.tensor([299])), dense_big[299:300])
    assert torch.equal(big(torch.tensor([0])), torch.zeros(1, 8))
    assert abs(rep["plugin"]["auc"] - rep["base"]["auc"]) < 0.05
    # accounting: codes as stored (uint8) and the dense parts
    assert rep["sizes"]["codes"] == 300 * 2  # stored once: the first-order table reads the same codes
    lr_big = model.first_order.embedding.tables["big"]
    assert isinstance(lr_big, SharedCodesPQTable) and lr_big.codes.data_ptr() == big.codes.data_ptr()
    assert not any(k.endswith("first_order.embedding.tables.big.codes") for k in model.state_dict())
    assert rep["sizes"]["total"] < before["total"] and rep["ratio"] == pytest.approx(
        before["total"] / rep["sizes"]["total"]
    )
    diag = rep["fields"]["big"]["diagnostics"]
    assert 0 < diag["all_usage"] <= 1 and diag["head_perplexity"] >= 1


def test_finetune_keeps_codes_and_save_load_gives_same_predictions(trained, tmp_path):
    from ctrzip.export.artifact import load, save

    data, base = trained
    model = copy.deepcopy(base)
    cfg = _cfg(finetune=StageTwoConfig(epochs=1, lr=1e-4, batch_size=256, max_steps=5))
    compress(model, cfg, data)
    codes_after = model.embedding.tables["big"].codes.clone()
    rep = model.compression_log[-1]["report"]
    assert rep["history"]["steps"] >= 1 and "auc" in rep["final"]
    # rebuild from spec()/empty() like an artifact loader, load strictly, compare predictions
    clone = build_model("deepfm", data.schema, model.config)
    for fe_name in ("embedding", "first_order.embedding"):
        fe = clone.get_submodule(fe_name)
        src = model.get_submodule(fe_name).tables["big"]
        fe.tables["big"] = SWAPPABLE.get(type(src).__name__).empty(**src.spec())
    clone.load_state_dict(model.state_dict(), strict=True)
    with pytest.raises(RuntimeError, match="not bound to 'embedding.tables.big'"):
        evaluate(clone, data["valid"], device="cpu")  # the first-order table reads shared codes
    assert bind_shared_codes(clone) == 1
    a = evaluate(model, data["valid"], device="cpu")
    b = evaluate(clone, data["valid"], device="cpu")
    assert a["auc"] == b["auc"] and a["logloss"] == b["logloss"]
    assert torch.equal(clone.embedding.tables["big"].codes, codes_after)
    # and through the safetensors artifact (manifest replays PQTable.empty)
    loaded = load(save(tmp_path / "art", model))
    assert isinstance(loaded.first_order.embedding.tables["big"], PQTable)
    c = evaluate(loaded, data["valid"], device="cpu")
    assert c["auc"] == a["auc"] and c["logloss"] == a["logloss"]


def test_finetune_can_freeze_codebooks(trained):
    data, base = trained
    model = copy.deepcopy(base)
    stage = StageTwoConfig(
        epochs=1, lr=1e-3, batch_size=256, max_steps=5, freeze_codebooks=True, keep_start=False
    )
    compress(model, _cfg(protocol="none"), data)
    books = model.embedding.tables["big"].codebooks.detach().clone()
    first = model.mlp.layers[0].weight.detach().clone()
    from ctrzip.compression.mec.stage2 import finetune

    finetune(model, data, stage, 0, "cpu")
    assert torch.equal(model.embedding.tables["big"].codebooks, books)
    assert not torch.equal(model.mlp.layers[0].weight, first)
    assert model.embedding.tables["big"].codebooks.requires_grad  # restored after fit


def test_retrain_protocol_and_variants(trained):
    data, base = trained
    model = copy.deepcopy(base)
    pq_codes = {}
    cfg = _cfg(
        variant="weighted_kmeans",
        protocol="retrain",
        retrain=StageTwoConfig(epochs=1, lr=3e-3, batch_size=256, max_steps=10),
    )
    compress(model, cfg, data)
    rep = model.compression_log[-1]["report"]
    big = model.embedding.tables["big"]
    assert big.layout == "concat" and rep["fields"]["big"]["layout"] == "concat"
    pq_codes["wkm"] = big.codes.clone()
    assert "auc" in rep["final"] and rep["history"]["steps"] >= 1
    # the pq method: basic PQ preset
    model2 = copy.deepcopy(base)
    compress(
        model2,
        PQConfig(
            min_vocab=100,
            num_subspaces=2,
            codebook_size=16,
            device="cpu",
            protocol="none",
            code_learning=CodeLearningConfig(**{**FAST, "weighting": "none", "alpha": 0.0, "beta": 0.0}),
        ),
        data,
    )
    assert model2.compression_log[-1]["method"] == "pq"
    assert isinstance(model2.embedding.tables["big"], PQTable)


def test_select_fields_rule(trained):
    data, base = trained
    chosen, skipped = select_fields(base, _cfg(min_vocab=301))
    assert chosen == [] and set(skipped) == {"big", "small"}
    chosen, _ = select_fields(base, _cfg(fields=("big",)))
    assert chosen == ["big"]
    with pytest.raises(
        CompressionError, match=r"'small' listed in fields .*codebook_size 16 exceeds .* 6 coded rows"
    ):
        select_fields(base, _cfg(fields=("small",)))  # 8 ids: padding, 6 coded rows, OOV
    with pytest.raises(CompressionError, match="match no sparse field"):
        select_fields(base, _cfg(fields=("nope",)))


@pytest.mark.parametrize("k", [16, 64])
def test_projected_bytes_match_measured_model(trained, k):
    """The full-scale projection, applied to the test vocabulary, equals the measured bytes."""
    from ctrzip.compression.mec.projection import project_mec_bytes

    data, base = trained
    model = copy.deepcopy(base)
    compress(model, _cfg(protocol="none", codebook_size=k), data)
    before, after = model_bytes(base), model_bytes(model)
    vocab = {f.name: f.vocab_size for f in data.schema.sparse_fields}
    tables = sum(v * 8 * 4 + v * 4 for v in vocab.values())  # embedding + first-order, fp32
    proj = project_mec_bytes(
        vocab,
        dim=8,
        num_subspaces=2,
        codebook_size=k,
        min_vocab=100,
        network_bytes=before["total"] - tables,
        first_order=True,
    )
    assert proj["dense_bytes"] == before["total"]
    assert proj["mec_bytes"] == after["total"]
    assert proj["mec_bytes_packed"] == after["total_packed_projection"]
    assert proj["quantized_fields"] == len(model.compression_log[-1]["report"]["fields"]) == 1


def test_finetune_keeps_the_plugged_in_model_when_training_only_hurts(trained):
    from ctrzip.compression.mec.stage2 import finetune

    data, base = trained
    model = copy.deepcopy(base)
    compress(model, _cfg(protocol="none"), data)
    plugin = evaluate(model, data["valid"], device="cpu")["auc"]
    start = copy.deepcopy(model.state_dict())
    wreck = {"epochs": 1, "lr": 5.0, "batch_size": 256}
    res = finetune(model, data, StageTwoConfig(**wreck), 0, "cpu")  # keep_start by default
    assert res.kept_start and res.history.best["step"] == 0 and res.final == res.direct
    assert evaluate(model, data["valid"], device="cpu")["auc"] == plugin
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    model.load_state_dict(start)
    finetune(model, data, StageTwoConfig(**wreck, keep_start=False), 0, "cpu")
    assert evaluate(model, data["valid"], device="cpu")["auc"] < plugin


def test_artifact_round_trip_of_a_quantized_deepfm_stores_codes_once(trained, tmp_path):
    from safetensors import safe_open

    from ctrzip.export.artifact import load, save

    data, base = trained
    model = copy.deepcopy(base)
    compress(model, _cfg(protocol="none"), data)
    save(tmp_path / "art", model)
    with safe_open(str(tmp_path / "art" / "model.safetensors"), "pt") as fh:
        code_keys = [k for k in fh.keys() if k.endswith(".codes")]  # noqa: SIM118
    assert code_keys == ["embedding.tables.big.codes"]
    loaded = load(tmp_path / "art", device="cpu")
    lr_big = loaded.first_order.embedding.tables["big"]
    assert isinstance(lr_big, SharedCodesPQTable) and lr_big.codes.data_ptr() == (
        loaded.embedding.tables["big"].codes.data_ptr()
    )
    a, b = evaluate(model, data["valid"], device="cpu"), evaluate(loaded, data["valid"], device="cpu")
    assert a["auc"] == b["auc"] and a["logloss"] == b["logloss"]


def test_progress_shows_each_field_with_its_budget_and_eta(trained, capsys):
    data, base = trained
    compress(copy.deepcopy(base), _cfg(protocol="none", progress=True), data)
    err = capsys.readouterr().err
    # the field's bar (steps done / budget, ETA) and its summary line
    assert "stage 1 big" in err and "30/30" in err and "eta" in err
    assert "stage 1 big: 300 rows, 30 steps x 128 rows in" in err and "plug-in AUC" in err
