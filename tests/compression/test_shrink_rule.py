"""One "does it shrink" rule for every method (mec/pq, lowrank MLP and embedding, svd, tt) and
every target: a target whose compressed form is not smaller stays, the report says why, a listed
target that cannot shrink is refused, and a request under which nothing can shrink is a
``CompressionError`` before any work."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ctrzip.compression import compress
from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
from ctrzip.compression.lowrank.fold import FoldedLinear
from ctrzip.compression.lowrank.svd import SVDConfig
from ctrzip.compression.lowrank.tt import TTConfig
from ctrzip.compression.mec.fields import pq_field_bytes
from ctrzip.compression.mec.method import MECConfig, PQConfig
from ctrzip.compression.shrink import (
    fold_delta_bytes,
    lowrank_linear_bytes,
    lowrank_table_bytes,
    module_bytes,
    tt_table_bytes,
)
from ctrzip.compression.sizes import stored_bytes
from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import DenseTable
from ctrzip.nn.embedding.lowrank import LowRankTable
from ctrzip.nn.embedding.pq import PQFit, PQTable
from ctrzip.nn.embedding.tt import TTTable
from ctrzip.nn.lowrank_linear import LowRankLinear

from .lowrank._lowrank_data import make_dataset, make_low_rank, make_model

NO_FT = {"finetune_epochs": 0, "eval_split": None, "device": "cpu"}
KMEANS = {"num_subspaces": 2, "codebook_size": 4, "protocol": "none", "plugin_per_field": False,
          "device": "cpu", "kmeans_iters": 3}  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_dataset(tmp_path_factory.mktemp("shrink") / "ds")


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


def _issue_model() -> nn.Module:
    """The issue's example: DeepFM, embedding 8, MLP [16, 16, 16]."""
    return make_model("deepfm", mlp=[16, 16, 16])


# --- the issue's examples: nothing can shrink -> CompressionError, model untouched ----------------
@pytest.mark.parametrize(
    ("config", "message"),
    [
        (LowRankConfig(finetune_epochs=0), r"mlp\.layers\.2: rank 64 >= width 16 of this 16 -> 16 layer"),
        (SVDConfig(), r"mlp\.layers\.2: rank 64 >= width 16"),
        (
            LowRankConfig(mlp=False, embedding=True, embedding_rank=8),
            r"embedding\.tables\.user: embedding_rank 8 >= embedding dim 8",
        ),
        (SVDConfig(mlp=False, embedding=True, embedding_rank=8), r"embedding_rank 8 >= embedding dim 8"),
    ],
)
def test_issue_examples_that_grew_the_model_are_refused_before_any_work(config, message, data) -> None:  # type: ignore[no-untyped-def]
    model = _issue_model()
    state = _state(model)
    with pytest.raises(CompressionError, match=r"nothing would be compressed \(.*" + message):
        compress(model, config, data)
    assert _unchanged(model, state) and not getattr(model, "compression_log", [])
    # before any work: no data is touched (no calibration pass), so None fails the same way
    with pytest.raises(CompressionError, match="nothing would be compressed"):
        compress(_issue_model(), config, None)


def test_rank_wider_than_the_layer_is_refused_not_cut(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm", embedding_dim=16, mlp=[400, 400, 400])
    with pytest.raises(CompressionError, match="rank 1000 >= width 400 of this 400 -> 400 layer"):
        compress(model, LowRankConfig(rank=1000, **NO_FT), data)
    with pytest.raises(CompressionError, match="embedding_rank 64 >= embedding dim 16"):
        compress(model, LowRankConfig(mlp=False, embedding=True, embedding_rank=64, **NO_FT), data)
    assert all(isinstance(t, DenseTable) for t in model.embedding.tables.values())


# --- mixed: the non-shrinking targets stay, with their reason and bytes ---------------------------
def test_lowrank_keeps_layers_that_would_not_shrink(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")  # hidden 24 -> 20 (shrinks at rank 10) and 20 -> 16 (does not)
    before = stored_bytes(model)
    compress(model, LowRankConfig(rank=10, **NO_FT), data)
    report = model.compression_log[-1]["report"]
    by = {d["target"]: d for d in report["targets"]}
    assert isinstance(model.get_submodule("mlp.layers.2"), LowRankLinear)
    assert type(model.get_submodule("mlp.layers.4")) is nn.Linear
    kept = by["mlp.layers.4"]
    assert kept["action"] == "kept" and kept["bytes_before"] == kept["bytes_after"] == (20 * 16 + 16) * 4
    assert (
        kept["reason"]
        == f"LowRankLinear rank 10 would not be smaller: {(20 * 10 + 10 + 10 * 16 + 16) * 4:,} B >= 1,344 B"
    )
    done = by["mlp.layers.2"]
    assert done["action"] == "compressed" and done["kind"] == "linear"
    assert done["bytes_before"] == (24 * 20 + 20) * 4
    assert (
        done["bytes_after"]
        == module_bytes(model.get_submodule("mlp.layers.2"))
        == (24 * 10 + 10 + 10 * 20 + 20) * 4
    )
    assert report["bytes"] == {"before": before, "after": stored_bytes(model)}
    assert before - stored_bytes(model) == done["bytes_before"] - done["bytes_after"]


def test_mlp_shrinks_while_every_table_is_kept(data) -> None:  # type: ignore[no-untyped-def]
    model = _issue_model()
    compress(model, LowRankConfig(rank=4, embedding=True, embedding_rank=8, **NO_FT), data)
    report = model.compression_log[-1]["report"]
    tables = [d for d in report["targets"] if d["kind"] == "table"]
    assert {d["target"] for d in tables} == {f"embedding.tables.{f}" for f in ("user", "item", "tags", "cat")}
    assert all(d["action"] == "kept" and "embedding_rank 8 >= embedding dim 8" in d["reason"] for d in tables)
    assert all(isinstance(t, DenseTable) for t in model.embedding.tables.values())
    assert not any(isinstance(m, FoldedLinear) for m in model.modules())
    assert report["embedding"]["skipped"] and "direct" not in report["embedding"]
    assert report["embedding"]["bytes"]["before"] == report["embedding"]["bytes"]["after"]
    assert isinstance(model.get_submodule("mlp.layers.2"), LowRankLinear)


@pytest.mark.parametrize("method", ["lowrank", "svd"])
def test_embedding_decisions_count_the_folded_layer(method: str, data) -> None:  # type: ignore[no-untyped-def]
    """Per-field bytes include the consumer's change; together they are the model's real change."""
    model = make_model("deepfm")  # consumer mlp.layers.0: 24 outputs
    before = stored_bytes(model)
    cls = LowRankConfig if method == "lowrank" else SVDConfig
    compress(model, cls(mlp=False, embedding=True, embedding_rank=3, **NO_FT), data)
    report = model.compression_log[-1]["report"]
    assert isinstance(model.get_submodule("mlp.layers.0"), FoldedLinear)
    for d in report["targets"]:
        v = model.embedding.tables[d["target"].rsplit(".", 1)[1]].num_embeddings
        # the table plus its slice of the consumer: 8 input columns before, 3 + 1 after
        assert d["bytes_before"] == v * 8 * 4 + 24 * 8 * 4
        assert d["bytes_after"] == lowrank_table_bytes(v, 8, 3) + 24 * (3 + 1) * 4 > 0
    saved = sum(d["bytes_before"] - d["bytes_after"] for d in report["targets"])
    assert before - stored_bytes(model) == saved == report["bytes"]["before"] - report["bytes"]["after"]


def test_listed_targets_that_cannot_shrink_are_refused_with_bytes(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    state = _state(model)
    with pytest.raises(
        CompressionError, match=r"'mlp\.layers\.4' listed in mlp_targets .*1,544 B >= 1,344 B"
    ):
        compress(model, LowRankConfig(rank=10, mlp_targets=("mlp.layers.4",), **NO_FT), data)
    cfg = SVDConfig(
        mlp=False, embedding=True, embedding_rank=4, embedding_fields=("cat",), fold=False, **NO_FT
    )
    cat = lowrank_table_bytes(6, 8, 4)
    with pytest.raises(CompressionError, match=rf"'cat' listed in embedding_fields .*{cat:,} B >= 192 B"):
        compress(model, cfg, data)
    assert _unchanged(model, state)
    # a glob is not a listing: its non-shrinking matches stay with a reason
    compress(model, LowRankConfig(rank=10, mlp_targets=("mlp.layers.*",), **NO_FT), data)
    actions = {d["target"]: d["action"] for d in model.compression_log[-1]["report"]["targets"]}
    assert actions["mlp.layers.4"] == "kept" and actions["mlp.layers.2"] == "compressed"


def test_variance_chosen_rank_follows_the_same_rule(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    state = _state(model)
    with pytest.raises(CompressionError, match="nothing would be compressed"):  # full variance = full rank
        compress(model, LowRankConfig(rank=None, variance=1.0, **NO_FT), data)
    assert _unchanged(model, state)


# --- TT -----------------------------------------------------------------------------------------
def test_tt_rule(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    with pytest.raises(CompressionError, match=r"embedding\.tables\.user: vocab 30 < min_vocab 1,000"):
        compress(model, TTConfig(**NO_FT), data)
    big = tt_table_bytes(60, 8, 16)
    with pytest.raises(CompressionError, match=rf"'item' listed in fields .*{big:,} B >= 1,920 B"):
        compress(model, TTConfig(fields=("item",), **NO_FT), data)
    compress(model, TTConfig(tt_rank=2, min_vocab=50, **NO_FT), data)
    report = model.compression_log[-1]["report"]
    by = {d["target"]: d for d in report["targets"]}
    assert by["embedding.tables.item"]["action"] == "compressed"
    assert by["embedding.tables.item"]["bytes_after"] == model.embedding.tables["item"].nbytes()
    assert by["embedding.tables.user"]["reason"] == "vocab 30 < min_vocab 50"
    assert isinstance(model.embedding.tables["item"], TTTable)


# --- MEC / PQ -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [MECConfig, PQConfig])
def test_codebook_larger_than_the_field_is_refused_at_once(cls, data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    state = _state(model)
    with pytest.raises(
        CompressionError,
        match=r"'item' listed in fields .*codebook_size 100,000 exceeds the field's 58 coded rows",
    ):
        compress(model, cls(codebook_size=100_000, fields=("item",), device="cpu"), data)
    assert _unchanged(model, state)


def test_listed_field_whose_pq_form_is_larger_is_refused_with_bytes(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    dense, pq = pq_field_bytes(60, 8, 4, 32, "additive", first_order=True)
    assert (dense, pq) == (60 * 8 * 4 + 60 * 4, 60 * 4 + (4 * 32 * 8 + 8 + 8) * 4 + (4 * 32 + 2) * 4)
    with pytest.raises(
        CompressionError,
        match=rf"'item' listed in fields .*PQ \(M=4, K=32\) would not be smaller: {pq:,} B >= {dense:,} B",
    ):
        compress(model, MECConfig(num_subspaces=4, codebook_size=32, fields=("item",), device="cpu"), data)


def test_min_vocab_above_every_field_is_refused_with_each_reason(data) -> None:  # type: ignore[no-untyped-def]
    """Kind 4, example C: the shipped min_vocab 10000 on small fields quantized nothing and said 1.0x."""
    model = make_model("deepfm")
    with pytest.raises(
        CompressionError,
        match=r"mec: nothing would be compressed \(embedding\.tables\.item: vocab 60 < min_vocab 10000; "
        r"embedding\.tables\.user: vocab 30 .*lower min_vocab",
    ) as err:
        compress(model, MECConfig(device="cpu"), data)  # largest fields first
    reasons = {d["target"]: d["reason"] for d in err.value.targets}  # every decision, for the CLI
    assert reasons == {
        f"embedding.tables.{f}": f"vocab {v} < min_vocab 10000"
        for f, v in (("user", 30), ("item", 60), ("tags", 15), ("cat", 6))
    }


def test_mec_report_lists_compressed_and_kept_fields_with_measured_bytes(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    before = stored_bytes(model)
    compress(model, MECConfig.variant("weighted_kmeans", min_vocab=20, **KMEANS), data)
    report = model.compression_log[-1]["report"]
    by = {d["target"]: d for d in report["targets"]}
    assert set(by) == {f"embedding.tables.{f}" for f in ("user", "item", "tags", "cat")}
    assert by["embedding.tables.tags"] == {
        "target": "embedding.tables.tags", "kind": "table", "action": "kept",
        "reason": "vocab 15 < min_vocab 20",
        "bytes_before": 15 * 8 * 4 + 15 * 4, "bytes_after": 15 * 8 * 4 + 15 * 4,
    }  # fmt: skip
    for name, v in (("user", 30), ("item", 60)):
        d = by[f"embedding.tables.{name}"]
        measured = module_bytes(model.embedding.tables[name]) + module_bytes(
            model.first_order.embedding.tables[name]
        )
        assert d["action"] == "compressed" and d["bytes_after"] == measured
        assert (d["bytes_before"], d["bytes_after"]) == pq_field_bytes(v, 8, 2, 4, "concat", first_order=True)
    assert report["bytes"] == {"before": before, "after": stored_bytes(model)}
    assert report["skipped"] == {"tags": "vocab 15 < min_vocab 20", "cat": "vocab 6 < min_vocab 20"}


# --- the byte formulas against the modules they predict ---------------------------------------------
def test_byte_formulas_match_the_modules() -> None:
    lin = nn.Linear(24, 20)
    for k, bias in ((3, True), (7, False)):
        low = LowRankLinear(24, 20, k, down_bias=bias)
        assert lowrank_linear_bytes(24, 20, k, bias) == module_bytes(low) == low.nbytes()
    assert module_bytes(lin) == (24 * 20 + 20) * 4
    for v, d, k in ((30, 8, 2), (1000, 16, 5)):
        assert (
            lowrank_table_bytes(v, d, k)
            == module_bytes(LowRankTable(v, d, k))
            == LowRankTable(v, d, k).nbytes()
        )
    for v, d, r in ((60, 8, 2), (300, 4, 64), (12345, 16, 16), (7, 6, 3)):
        assert tt_table_bytes(v, d, r) == TTTable(v, d, r).nbytes(), (v, d, r)
    # folding one field of rank k into a 24-output Linear over 4 fields of dim 8
    base = nn.Linear(32, 24)
    tables = {"a": LowRankTable(10, 8, 3)}
    parts = [["a", 8, 4], ["b", 8, 0], ["c", 8, 0], ["d", 8, 0]]
    assert module_bytes(FoldedLinear.fold(base, tables, parts)) - module_bytes(base) == fold_delta_bytes(
        24, 8, 3
    )
    # the MEC field rule against a real PQ table (concat, K = 4, M = 2 -> uint8 codes)
    table = DenseTable(60, 8)
    pq = PQTable.from_dense(table, PQFit(torch.zeros(60, 2, dtype=torch.long), torch.zeros(2, 4, 4)))
    assert pq_field_bytes(60, 8, 2, 4, "concat")[1] == module_bytes(pq) and pq_field_bytes(
        60, 8, 2, 4, "concat"
    )[0] == module_bytes(table)
    assert copy.deepcopy(pq).nbytes() == module_bytes(pq)


def test_patterns_that_match_nothing_are_user_errors(data) -> None:  # type: ignore[no-untyped-def]
    model = make_model("deepfm")
    with pytest.raises(CompressionError, match=r"mlp_targets: no nn.Linear matches \['mlp.nope'\]"):
        compress(model, LowRankConfig(rank=4, mlp_targets=("mlp.nope",), **NO_FT), data)
    with pytest.raises(CompressionError, match=r"fields: patterns \['zz\*'\] match no sparse field"):
        compress(model, TTConfig(fields=("zz*",), **NO_FT), data)


@pytest.mark.parametrize("config", [LowRankConfig(rank=4, **NO_FT), SVDConfig(rank=4, **NO_FT)])
def test_a_model_without_targets_is_refused_not_reported_compressed(config, data) -> None:  # type: ignore[no-untyped-def]
    from ctrzip.models.base import build_model

    from .lowrank._lowrank_data import schema

    model = build_model("fm", schema(), {"embedding_dim": 8})  # no MLP tower: nothing for mlp=True
    with pytest.raises(CompressionError, match="nothing to compress: the settings select no target"):
        compress(model, config, data)


def test_variance_rank_refusal_of_a_listed_layer_changes_nothing(data) -> None:  # type: ignore[no-untyped-def]
    """Layer 2 (rank-3 weights) would shrink, listed layer 4 (20 -> 16, full rank) cannot: the
    refusal comes before layer 2 is swapped."""
    model = make_low_rank(make_model("deepfm"), linears={"mlp.layers.2": 3})
    state = _state(model)
    cfg = LowRankConfig(rank=None, variance=0.999999, mlp_targets=("mlp.layers.2", "mlp.layers.4"), **NO_FT)
    with pytest.raises(CompressionError, match=r"'mlp\.layers\.4' listed in mlp_targets"):
        compress(model, cfg, data)
    assert _unchanged(model, state) and type(model.get_submodule("mlp.layers.2")) is nn.Linear
    compress(model, LowRankConfig(rank=None, variance=0.999999, mlp_targets=("mlp.layers.2",), **NO_FT), data)
    (d,) = model.compression_log[-1]["report"]["targets"]
    assert d["action"] == "compressed" and d["bytes_after"] == module_bytes(
        model.get_submodule("mlp.layers.2")
    )
    assert model.get_submodule("mlp.layers.2").rank == 3


def test_mec_fields_take_globs_like_the_other_methods(data) -> None:  # type: ignore[no-untyped-def]
    from ctrzip.compression.mec.fields import field_decisions
    from ctrzip.compression.mec.method import MECConfig

    model = make_model("deepfm")
    cfg = MECConfig(num_subspaces=2, codebook_size=4, fields=("it*", "us?r"))
    decided = {d["target"].rsplit(".", 1)[1]: d for d in field_decisions(model, cfg)}
    assert {n for n, d in decided.items() if d["reason"] != "not listed in fields"} == {"item", "user"}
    with pytest.raises(CompressionError, match=r"fields \['zz\*'\] match no sparse field"):
        field_decisions(model, MECConfig(fields=("zz*",)))
