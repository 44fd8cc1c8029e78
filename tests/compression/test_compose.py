"""Methods compose in any order, or refuse before touching the model (issue 9, kind 2).

Every ordered pair of methods runs on a tiny DeepFM (first-order term, a folded consumer, a
sequence field): the second call either raises ``CompressionError`` and leaves the model
exactly as it was, or the composed model saves and loads with identical predictions, every
tensor in the artifact, and every link (shared codes, folded fields) resolved.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

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
from ctrzip.compression.budget import BudgetConfig
from ctrzip.compression.lowrank.factorized import probe_batch
from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
from ctrzip.compression.lowrank.fold import FoldedLinear
from ctrzip.compression.lowrank.svd import SVDConfig
from ctrzip.compression.lowrank.tt import TTConfig
from ctrzip.compression.mec.method import VARIANTS, MECConfig, PQConfig
from ctrzip.compression.mec.stage1 import CodeLearningConfig
from ctrzip.compression.mixed import MixedConfig
from ctrzip.compression.quantize import (
    FP16Config,
    Int2Config,
    Int4Config,
    Int8Config,
    LinearInt8Config,
    RowwiseConfig,
)
from ctrzip.data.dataset import EncodedDataset, SplitArrays, save_counts, save_split
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.errors import CompressionError
from ctrzip.export import load, save
from ctrzip.models.base import CTRModel, build_model
from ctrzip.nn.embedding.bands import BandSpec
from ctrzip.nn.embedding.lowrank import LowRankTable
from ctrzip.nn.embedding.pq import PQTable, SharedCodesPQTable
from ctrzip.nn.swappable import SWAPPABLE

FAST_CODES = {"steps": 3, "batch_size": 64, "kmeans_iters": 3, "num_negatives": 2}

_NO_FT = {"finetune_epochs": 0, "eval_split": None, "device": "cpu"}

# One tiny config per method (and per step of the two-step methods); fine-tuning off.
METHOD_CONFIGS: dict[str, Callable[[], Any]] = {
    "mec": lambda: MECConfig.variant(
        "mec", num_subspaces=4, codebook_size=16, min_vocab=100, protocol="none",
        plugin_per_field=False, device="cpu", **FAST_CODES,
    ),
    "pq": lambda: PQConfig(
        num_subspaces=2, codebook_size=8, min_vocab=100, protocol="none", plugin_per_field=False,
        device="cpu", code_learning=CodeLearningConfig(**{**VARIANTS["basic_pq"], **FAST_CODES}),
    ),
    "lowrank_mlp": lambda: LowRankConfig(mlp=True, rank=4, finetune_epochs=0, eval_split=None, device="cpu"),
    "lowrank_emb": lambda: LowRankConfig(
        mlp=False, embedding=True, embedding_rank=3, finetune_epochs=0, eval_split=None, device="cpu"
    ),
    "svd": lambda: SVDConfig(
        mlp=True, rank=4, embedding=True, embedding_rank=2, finetune_epochs=0, eval_split=None, device="cpu"
    ),
    "tt": lambda: TTConfig(tt_rank=2, min_vocab=100, finetune_epochs=0, eval_split=None, device="cpu"),
    "rowwise": lambda: RowwiseConfig(bits=4, eval_split=None, device="cpu"),
    "fp16": lambda: FP16Config(eval_split=None, device="cpu"),
    "int8": lambda: Int8Config(eval_split=None, device="cpu"),
    "int4": lambda: Int4Config(eval_split=None, device="cpu"),
    "int2": lambda: Int2Config(eval_split=None, device="cpu"),
    "linear_int8": lambda: LinearInt8Config(eval_split=None, device="cpu"),
    "mixed": lambda: MixedConfig(
        plans={"big": (BandSpec(0, 30, "rowwise", {"bits": 8}), BandSpec(30, 150, "pq", {"M": 2, "K": 16}),
                       BandSpec(150, 299, "shared", {"S": 4}), BandSpec(299, 300, "float"))},
        eval_split=None, device="cpu",
    ),
    "budget": lambda: BudgetConfig(max_auc_loss=0.01, calib_rows=1000, pq=("2x16",), device="cpu"),
    "hashing": lambda: HashingConfig(min_vocab=100, **_NO_FT),
    "qr": lambda: QRConfig(min_vocab=100, **_NO_FT),
    "mixed_dim": lambda: MixedDimConfig(min_vocab=100, **_NO_FT),
    "dhe": lambda: DHEConfig(min_vocab=100, distill_steps=3, distill_batch_size=64, **_NO_FT),
    "prune": lambda: PruneConfig(min_vocab=100, **_NO_FT),
    "cce": lambda: CCEConfig(min_vocab=100, kmeans_iters=3, **_NO_FT),
}  # fmt: skip
# fp16/int8/int4/int2 are presets of rowwise (one class): they meet the other methods through
# rowwise, and each other only in their own pairs.
_PRESETS = {"fp16", "int8", "int4", "int2"}
PAIRS = [
    (a, b)
    for a in METHOD_CONFIGS
    for b in METHOD_CONFIGS
    if not ({a, b} & _PRESETS) or {a, b} <= _PRESETS | {"rowwise"}
]


def _schema() -> FeatureSchema:
    return FeatureSchema(
        fields=(
            FieldSpec("big", "categorical", vocab_size=300),
            FieldSpec("tags", "sequence", vocab_size=120, max_len=3),
            FieldSpec("small", "categorical", vocab_size=8),
            FieldSpec("x", "dense", source="numeric"),
        )
    )


def _split(s: FeatureSchema, n: int, rng: np.random.Generator) -> SplitArrays:
    cols = []
    for f in s.sparse_fields:
        p = 1.0 / np.arange(1, f.vocab_size + 1) ** 0.9  # Zipf-like, missing (0) included
        cols.append(rng.choice(f.vocab_size, size=(n, f.max_len), p=p / p.sum()))
    sparse = np.concatenate(cols, axis=1).astype(np.int32)
    dense = rng.standard_normal((n, 1)).astype(np.float32)
    logit = np.sin(sparse[:, 0] * 0.3) + 0.5 * dense[:, 0]
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return SplitArrays(sparse, dense, label)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> EncodedDataset:
    root = tmp_path_factory.mktemp("compose")
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
    return EncodedDataset.open(root)


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _model() -> CTRModel:
    torch.manual_seed(0)
    cfg = {"embedding_dim": 8, "embedding_init_std": 0.1, "mlp": [32, 32, 32]}
    return build_model("deepfm", _schema(), cfg).eval()


def _logits(model: CTRModel) -> torch.Tensor:
    batch = probe_batch(model.schema, 128, torch.device("cpu"), seed=3)  # ids 0 (missing) included
    with torch.no_grad():
        return model.eval()(batch)


def _state(model: CTRModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _types(model: CTRModel) -> dict[str, str]:
    return {fqn: type(m).__name__ for fqn, m in model.named_modules()}


def assert_links_resolved(model: CTRModel) -> None:
    """Every shared-code table reads an owning PQTable *in* the model; every folded field is
    a LowRankTable feeding that consumer."""
    for fqn, mod in model.named_modules():
        if isinstance(mod, SharedCodesPQTable):
            source = model.get_submodule(mod.code_source)
            assert mod._source is source, f"{fqn} reads a table that is not at {mod.code_source}"
            assert isinstance(source, PQTable) and not isinstance(source, SharedCodesPQTable)
        if isinstance(mod, FoldedLinear):
            for name in mod.folded_fields():
                table = model.embedding.tables[name]
                assert isinstance(table, LowRankTable) and table._code_sink is mod._sink, (fqn, name)


def assert_round_trip(model: CTRModel, path: Path) -> CTRModel:
    """save -> load gives identical predictions and the artifact holds every tensor."""
    before = _logits(model)
    save(path, model)
    stored = load_file(str(path / "model.safetensors"))
    state = model.state_dict()
    assert set(stored) == set(state)
    for k, v in state.items():
        assert torch.equal(stored[k], v.detach().cpu()), k
    back = load(path)
    assert _types(back) == _types(model)
    assert torch.equal(_logits(back), before)
    assert_links_resolved(back)
    return back


def test_every_registered_method_is_in_the_pair_test() -> None:
    keys = {method_for(make()).key for make in METHOD_CONFIGS.values()}
    assert keys == set(METHODS.keys()), "add a tiny config for each new method to METHOD_CONFIGS"


def test_every_swappable_type_appears_in_some_composition(data: EncodedDataset) -> None:
    """A new table or module type must be produced by one of the methods above (so the pair
    test covers it), or registered by a test-visible method."""
    seen: set[str] = set()
    for make in METHOD_CONFIGS.values():
        model = compress(_model(), make(), data)
        seen |= set(_types(model).values())
    assert set(SWAPPABLE.keys()) - {"DenseTable"} <= seen


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a}-then-{b}" for a, b in PAIRS])
def test_methods_compose_in_any_order_or_refuse(first: str, second: str, data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = compress(_model(), METHOD_CONFIGS[first](), data)
    logits, state, types = _logits(model), _state(model), _types(model)
    try:
        compress(model, METHOD_CONFIGS[second](), data)
    except CompressionError as err:
        msg = str(err)
        assert "\n" not in msg and len(msg) > 20, msg
        assert _types(model) == types and torch.equal(_logits(model), logits)
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        return
    assert len(model.compression_log) == 2
    assert_links_resolved(model)
    assert_round_trip(model, tmp_path / "artifact")


# --- the examples and the refusals, with exact expectations --------------------------


def test_example_a_lowrank_after_mec_keeps_first_order_codes(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The low-rank step replaces the PQ table; the first-order table takes over its codes."""
    model = compress(_model(), METHOD_CONFIGS["mec"](), data)
    fo = model.first_order.embedding.tables
    big_codes = model.embedding.tables["big"].codes.clone()
    fo_before = fo["big"].materialize().clone()
    compress(model, LowRankConfig(mlp=False, embedding=True, embedding_rank=1, finetune_epochs=0,
                                  eval_split=None, device="cpu"), data)  # fmt: skip
    assert isinstance(model.embedding.tables["big"], LowRankTable)
    owner = fo["big"]
    assert type(owner) is PQTable and torch.equal(owner.codes, big_codes)
    assert owner.code_nbytes() == 300 * 4  # V x M uint8 codes, counted once again
    assert torch.equal(owner.materialize(), fo_before)
    back = assert_round_trip(model, tmp_path / "a")
    assert type(back.first_order.embedding.tables["big"]) is PQTable


def test_example_b_second_lowrank_pass_refolds(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    common = dict(mlp=False, embedding=True, finetune_epochs=0, eval_split=None, device="cpu")
    model = compress(_model(), LowRankConfig(**common, embedding_rank=4), data)
    compress(model, LowRankConfig(**common, embedding_rank=2), data)
    consumer = model.get_submodule(model.embedding_consumer())
    assert isinstance(consumer, FoldedLinear)
    assert set(consumer.folded_fields()) == {"big", "tags", "small"}
    assert all(t.rank == 2 for t in model.embedding.tables.values())
    # the folded model equals the same tables read through the unfolded consumer
    rep = model.compression_log[-1]["report"]["embedding"]["fold"]
    assert rep["folded"] and rep["max_abs_diff"] < 1e-5
    assert_round_trip(model, tmp_path / "b")


def test_second_pass_on_some_fields_keeps_the_other_folds(data) -> None:  # type: ignore[no-untyped-def]
    common = dict(mlp=False, embedding=True, finetune_epochs=0, eval_split=None, device="cpu")
    model = compress(_model(), LowRankConfig(**common, embedding_rank=4), data)
    consumer = model.get_submodule(model.embedding_consumer())
    kept = consumer.weight.detach()[:, 5:10].clone()  # the "tags" block (after big's k + 1 = 5)
    compress(model, LowRankConfig(**common, embedding_rank=2, embedding_fields=("big",)), data)
    consumer = model.get_submodule(model.embedding_consumer())
    assert [p[2] for p in consumer.parts] == [3, 5, 5, 0]  # big refolded at k=2, others untouched
    assert torch.equal(consumer.weight.detach()[:, 3:8], kept)
    assert_links_resolved(model)


def test_mec_refuses_listed_field_already_quantized(data) -> None:  # type: ignore[no-untyped-def]
    model = compress(_model(), METHOD_CONFIGS["mec"](), data)
    logits, state = _logits(model), _state(model)
    cfg = copy.deepcopy(METHOD_CONFIGS["pq"]())
    cfg.fields = ("big",)
    with pytest.raises(CompressionError, match=r"fields: 'big' is already product-quantized"):
        compress(model, cfg, data)
    assert torch.equal(_logits(model), logits)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_mec_retrain_refuses_a_compressed_network(data) -> None:  # type: ignore[no-untyped-def]
    model = compress(_model(), METHOD_CONFIGS["lowrank_mlp"](), data)
    logits = _logits(model)
    cfg = METHOD_CONFIGS["mec"]()
    cfg.protocol = "retrain"
    with pytest.raises(CompressionError, match=r"protocol: 'retrain' .* mlp\.layers\.\d+ .*LowRankLinear"):
        compress(model, cfg, data)
    assert torch.equal(_logits(model), logits)


def test_mec_on_folded_lowrank_fields_unfolds_them_exactly(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = compress(_model(), METHOD_CONFIGS["lowrank_emb"](), data)
    cfg = METHOD_CONFIGS["mec"]()
    cfg.plugin_per_field = True  # swaps each field in and out once more
    compress(model, cfg, data)
    consumer = model.get_submodule(model.embedding_consumer())
    quantized = [n for n in ("big", "tags", "small") if isinstance(model.embedding.tables[n], PQTable)]
    assert "big" in quantized  # the fields PQ shrinks are unfolded, the others stay folded
    assert isinstance(consumer, FoldedLinear)
    assert consumer.folded_fields() == [n for n in ("big", "tags", "small") if n not in quantized]
    assert_round_trip(model, tmp_path / "c")


@pytest.mark.parametrize("fields", [("big",), ("big", "tags", "small")])
def test_unfolding_a_replaced_field_is_exact(fields, data) -> None:  # type: ignore[no-untyped-def]
    """Replacing folded tables by dense copies of themselves keeps every logit."""
    from ctrzip.nn.embedding.base import DenseTable
    from ctrzip.nn.swappable import replace_module

    model = compress(_model(), METHOD_CONFIGS["lowrank_emb"](), data)
    before = _logits(model).double()
    for name in fields:
        dense = DenseTable.from_tensor(model.embedding.tables[name].materialize())
        replace_module(model, f"embedding.tables.{name}", dense)
    consumer = model.get_submodule(model.embedding_consumer())
    if len(fields) == 3:
        assert type(consumer) is torch.nn.Linear  # nothing folded is left
    else:
        assert consumer.folded_fields() == ["tags", "small"]
    assert_links_resolved(model)
    torch.testing.assert_close(_logits(model).double(), before, atol=1e-5, rtol=0)


def test_replacing_a_table_directly_is_caught_at_save(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Bypassing replace_module leaves a first-order table reading a table that is gone."""
    from ctrzip.export import ArtifactError
    from ctrzip.nn.embedding.base import DenseTable

    model = compress(_model(), METHOD_CONFIGS["mec"](), data)
    model.embedding.tables["big"] = DenseTable(300, 8)
    with pytest.raises(ArtifactError, match=r"embedding\.tables\.big' is not a PQTable"):
        save(tmp_path / "x", model)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("bias_form", ["centered", "paper"])
def test_fold_into_factorized_consumer_then_replace_the_table(bias_form, data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """lowrank MLP on the consumer itself, then a fold into its first factor, then TT replaces the
    folded tables exactly: each artifact loads (the nested FoldedLinear / Linear is recorded)."""
    common = dict(finetune_epochs=0, eval_split=None, device="cpu")
    model = compress(_model(), LowRankConfig(mlp=True, rank=4, mlp_targets=("mlp.layers.0",),
                                             bias_form=bias_form, **common), data)  # fmt: skip
    compress(model, LowRankConfig(mlp=False, embedding=True, embedding_rank=3, **common), data)
    assert isinstance(model.get_submodule("mlp.layers.0.down"), FoldedLinear)
    assert_round_trip(model, tmp_path / "folded")
    before = _logits(model).double()
    from ctrzip.nn.embedding.base import DenseTable
    from ctrzip.nn.swappable import replace_module

    for name in ("big", "tags"):  # exact replacements (an exact TT would not be smaller: refused)
        replace_module(
            model,
            f"embedding.tables.{name}",
            DenseTable.from_tensor(model.embedding.tables[name].materialize()),
        )
    down = model.get_submodule("mlp.layers.0.down")
    assert isinstance(down, FoldedLinear) and down.folded_fields() == ["small"]
    assert (down.bias is None) == (bias_form == "paper")
    torch.testing.assert_close(_logits(model).double(), before, atol=1e-4, rtol=0)
    assert_round_trip(model, tmp_path / "tt")


def test_load_refuses_an_artifact_whose_links_do_not_resolve(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import json

    from ctrzip.export import ArtifactError

    model = compress(_model(), METHOD_CONFIGS["mec"](), data)
    path = save(tmp_path / "a", model)
    man = json.loads((path / "manifest.json").read_text())
    man["modules"]["first_order.embedding.tables.big"]["spec"]["code_source"] = "embedding.tables.small"
    (path / "manifest.json").write_text(json.dumps(man))
    sums = json.loads((path / "checksums.json").read_text())
    sums["manifest.json"] = hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
    (path / "checksums.json").write_text(json.dumps(sums))
    bad = r"manifest\.json: modules do not link up \(TypeError: 'embedding\.tables\.small' is not a PQTable"
    with pytest.raises(ArtifactError, match=bad):
        load(path)
