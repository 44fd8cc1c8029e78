"""The table baselines as methods: sized by a ratio, a byte budget or their own knob (bytes
checked against the built tables), refusals before any change, fine-tuning reaches the new
tables, and ``ctrzip compress --method NAME`` runs each one to a loadable artifact."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ctrzip.cli.main import app
from ctrzip.compression import compress
from ctrzip.compression.baselines import (
    CCEConfig,
    DHEConfig,
    HashingConfig,
    MixedDimConfig,
    PruneConfig,
    QRConfig,
)
from ctrzip.compression.lowrank.factorized import probe_batch
from ctrzip.compression.sizes import stored_bytes
from ctrzip.config import ConfigError
from ctrzip.data.dataset import EncodedDataset
from ctrzip.errors import CompressionError
from ctrzip.export import load, save
from ctrzip.nn.embedding.base import DenseTable

from ..lowrank._lowrank_data import make_dataset, make_model

FAST = {"device": "cpu", "finetune_batch_size": 64, "batch_size": 256, "min_vocab": 20}
NO_FT = {**FAST, "finetune_epochs": 0, "eval_split": None}
CONFIGS: dict[str, Any] = {
    "hashing": HashingConfig,
    "qr": QRConfig,
    "mixed_dim": MixedDimConfig,
    "dhe": lambda **kw: DHEConfig(**{"distill_steps": 5, "distill_batch_size": 64, **kw}),
    "prune": PruneConfig,
    "cce": lambda **kw: CCEConfig(**{"num_chunks": 2, "kmeans_iters": 5, **kw}),
}
TYPES = {"hashing": "HashedTable", "qr": "QRTable", "mixed_dim": "MixedDimTable", "dhe": "DHETable",
         "prune": "PrunedTable", "cce": "CCETable"}  # fmt: skip
SELECTED = ("user", "item")  # vocab >= min_vocab 20 (tags 15, cat 6 stay dense)


@pytest.fixture(autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> EncodedDataset:
    return make_dataset(tmp_path_factory.mktemp("baselines"), n_train=384, n_valid=192)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ratio_bounds_each_table_and_the_report_counts_the_built_bytes(
    name: str, data: EncodedDataset
) -> None:
    model = make_model()
    before = {n: t.nbytes() for n, t in model.embedding.tables.items()}
    total_before = stored_bytes(model)
    compress(model, CONFIGS[name](ratio=2.5, **NO_FT), data)
    report = model.compression_log[-1]["report"]
    tables = model.embedding.tables
    for n in SELECTED:
        table = tables[n]
        assert type(table).__name__ == TYPES[name]
        assert 0 < table.nbytes() <= before[n] / 2.5  # QR cannot reach 3x on 30 rows
        assert report["embedding"]["fields"][n]["bytes"] == {"before": before[n], "after": table.nbytes()}
    assert all(type(tables[n]) is DenseTable for n in ("tags", "cat"))
    decisions = {d["target"].rsplit(".", 1)[1]: d for d in report["targets"]}
    assert decisions["cat"]["action"] == "kept" and "min_vocab 20" in decisions["cat"]["reason"]
    saved = sum(before[n] - tables[n].nbytes() for n in SELECTED)
    assert stored_bytes(model) == total_before - saved == report["bytes"]["after"]
    assert all(decisions[n]["bytes_after"] == tables[n].nbytes() for n in SELECTED)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_budget_bytes_cover_the_selected_tables_together(name: str, data: EncodedDataset) -> None:
    model = make_model()
    budget = sum(model.embedding.tables[n].nbytes() for n in SELECTED) * 2 // 5
    compress(model, CONFIGS[name](budget_bytes=budget, **NO_FT), data)
    assert sum(model.embedding.tables[n].nbytes() for n in SELECTED) <= budget


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_budget_no_form_fits_is_refused_before_any_change(name: str, data: EncodedDataset) -> None:
    model = make_model()
    state = _state(model)
    with pytest.raises(
        CompressionError, match=rf"{name}: budget_bytes 40: field 'user' cannot fit its share"
    ):
        compress(model, CONFIGS[name](budget_bytes=40, **NO_FT), data)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(type(t) is DenseTable for t in model.embedding.tables.values())


@pytest.mark.parametrize(
    ("name", "knob", "check"),
    [
        ("hashing", {"num_buckets": 7}, lambda t: t.num_buckets == 7),
        ("qr", {"collisions": 4, "combine": "add"}, lambda t: (t.collisions, t.combine) == (4, "add")),
        ("mixed_dim", {"base_dim": 2, "alpha": 0.0}, lambda t: set(t.dims) == {2}),
        ("dhe", {"hidden": 3}, lambda t: t.hidden == 3),
        ("prune", {"sparsity": 0.9}, lambda t: t.kept == math.floor(0.1 * (t.num_embeddings - 1) * 8 + 1e-9)),
        ("cce", {"codebook_size": 3}, lambda t: (t.codebook_size, t.num_chunks) == (3, 2)),
    ],
)
def test_the_methods_own_knob_sets_the_form(name: str, knob: dict, check: Any, data: EncodedDataset) -> None:
    model = compress(make_model(), CONFIGS[name](**knob, **NO_FT), data)
    assert all(check(model.embedding.tables[n]) for n in SELECTED)


def test_a_listed_field_that_cannot_shrink_is_refused(data: EncodedDataset) -> None:
    model = make_model()
    cfg = PruneConfig(sparsity=0.0, fields=("user",), **{k: v for k, v in NO_FT.items() if k != "min_vocab"})
    with pytest.raises(
        CompressionError, match=r"prune: 'user' listed in fields cannot be compressed: PrunedTable\("
    ):
        compress(model, cfg, data)
    assert type(model.embedding.tables["user"]) is DenseTable


def test_mixed_dim_needs_training_counts(data: EncodedDataset, tmp_path: Path) -> None:
    no_counts = EncodedDataset(root=tmp_path, schema=data.schema, counts={}, splits=dict(data.splits))
    with pytest.raises(CompressionError, match="mixed_dim: field 'user': the power-law dimension rule needs"):
        compress(make_model(), MixedDimConfig(**NO_FT), no_counts)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: HashingConfig(ratio=2.0, num_buckets=8), "hashing: set only one of ratio / num_buckets"),
        (lambda: QRConfig(budget_bytes=100, collisions=3), "qr: set only one of budget_bytes / collisions"),
        (lambda: HashingConfig(ratio=1.0), "hashing: ratio must be > 1, got 1.0"),
        (lambda: QRConfig(budget_bytes=0), "qr: budget_bytes must be >= 1, got 0"),
        (lambda: HashingConfig(num_buckets=0), "hashing: num_buckets must be >= 1"),
        (lambda: HashingConfig(hash="md5"), "hashing: hash must be one of"),
        (lambda: QRConfig(combine="concat"), "qr: combine must be one of"),
        (lambda: MixedDimConfig(alpha=1.5), r"mixed_dim: alpha must be in \[0, 1\], got 1.5"),
        (lambda: MixedDimConfig(num_blocks=0), "mixed_dim: num_blocks must be >= 1"),
        (lambda: DHEConfig(num_layers=0), "dhe: num_layers must be >= 1"),
        (lambda: DHEConfig(distill_lr=0.0), "dhe: distill_lr must be > 0"),
        (lambda: PruneConfig(sparsity=1.0), r"prune: sparsity must be in \[0, 1\), got 1.0"),
        (lambda: PruneConfig(init="random"), "prune: init must be 'from_table'"),
        (lambda: PruneConfig(granularity="block"), "prune: granularity must be one of"),
        (lambda: DHEConfig(min_vocab=-1), "dhe: min_vocab must be >= 0"),
        (lambda: CCEConfig(recluster_rounds=-1), "cce: recluster_rounds must be >= 0"),
        (lambda: CCEConfig(codebook_size=0), "cce: codebook_size must be >= 1"),
    ],
)
def test_bad_settings_raise_naming_the_setting(make: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_mixed_dim_base_dim_above_the_table_dim_is_refused(data: EncodedDataset) -> None:
    with pytest.raises(
        CompressionError, match="mixed_dim: base_dim 9 exceeds the embedding dim 8 of field 'user'"
    ):
        compress(make_model(), MixedDimConfig(base_dim=9, **NO_FT), data)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("init", ["from_table", "random"])
def test_finetuning_trains_the_new_tables(name: str, init: str, data: EncodedDataset) -> None:
    if name == "prune" and init == "random":
        pytest.skip("pruning starts from the trained table only (refused above)")
    base = make_model()
    kw = {**FAST, "init": init, "ratio": 2.0}
    direct = compress(copy.deepcopy(base), CONFIGS[name](**kw, finetune_epochs=0, eval_split=None), data)
    tuned = compress(copy.deepcopy(base), CONFIGS[name](**kw, lr=1e-2, keep_start=False), data)
    for n in SELECTED:
        a, b = direct.embedding.tables[n], tuned.embedding.tables[n]
        assert type(b).__name__ == TYPES[name]
        moved = [not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True)]
        assert moved and all(moved), (n, moved)  # every parameter of the new table got gradient
    metrics = tuned.compression_log[-1]["report"]["metrics"]
    assert metrics["direct"] is not None and metrics["final"] is not None


@pytest.mark.parametrize("name", ["hashing", "qr", "mixed_dim", "dhe", "cce"])
def test_random_init_starts_at_the_trained_rows_scale(name: str, data: EncodedDataset) -> None:
    base = make_model()
    std = float(base.embedding.tables["item"].weight.detach().std())
    model = compress(copy.deepcopy(base), CONFIGS[name](init="random", ratio=2.0, **NO_FT), data)
    got = float(model.embedding.tables["item"].materialize()[1:].std())
    assert 0.2 * std < got < 5 * std, (got, std)


@pytest.fixture(scope="module")
def artifact(data: EncodedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(tmp_path_factory.mktemp("model") / "model", make_model())


@pytest.mark.parametrize(
    ("name", "sets"),
    [
        ("hashing", ["num_buckets=9"]),
        ("qr", ["ratio=2.5", "combine=add"]),
        ("mixed_dim", ["budget_bytes=1200", "alpha=0.5"]),
        ("dhe", ["hidden=4", "distill_steps=5", "distill_batch_size=64"]),
        ("prune", ["sparsity=0.9", "granularity=element"]),
        ("cce", ["codebook_size=6", "num_chunks=2", "kmeans_iters=3"]),
    ],
)
def test_cli_reaches_each_baseline(name: str, sets: list[str], artifact: Path, data: EncodedDataset,
                                   tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "out"
    args = ["compress", "--method", name, "-m", str(artifact), "-d", str(data.root), "-o", str(out)]
    sets = [*sets, "min_vocab=20", "finetune_epochs=0", "device=cpu"]
    res = CliRunner().invoke(app, [*args, *(x for s in sets for x in ("--set", s))], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    entry = json.loads((out / "manifest.json").read_text())["compression_log"][-1]
    assert entry["method"] == name
    for key, value in _parsed(sets[:-3]).items():
        assert entry["config"][key] == value
    back = load(out)
    assert {type(back.embedding.tables[n]).__name__ for n in SELECTED} == {TYPES[name]}
    assert "targets: 2 compressed, 2 kept" in res.output
    # the artifact reproduces the compressed model that the CLI evaluated: re-run it in process
    again = compress(load(artifact), CONFIGS[name](**_parsed(sets[:-3]), **NO_FT), data)
    batch = probe_batch(back.schema, 64, torch.device("cpu"), seed=1)
    with torch.no_grad():
        np.testing.assert_array_equal(back.eval()(batch).numpy(), again.eval()(batch).numpy())


def _parsed(sets: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in sets:
        key, value = s.split("=")
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def _expected_at(table: Any, rows: int) -> int:
    """Each baseline's projection rule, written out independently."""
    v, d = table.num_embeddings, table.embedding_dim
    kind = type(table).__name__
    if kind == "HashedTable":  # same load factor
        return math.ceil(table.num_buckets * rows / v) * d * 4
    if kind == "QRTable":  # same collisions
        return (math.ceil(rows / table.collisions) + table.collisions) * d * 4
    if kind == "MixedDimTable":  # blocks keep their share of the ids; projections fixed
        sizes = [round((b - a) * rows / v) for a, b in zip(table.edges, table.edges[1:], strict=False)]
        return 4 * sum(n * k + (k * d if k < d else 0) for n, k in zip(sizes, table.dims, strict=True))
    if kind == "CCETable":  # the index grows (uint8 at k <= 256), the two tables do not
        return rows * table.num_chunks + 2 * table.codebook_size * d * 4
    if kind == "DHETable":  # the network only
        return sum(p.numel() * 4 for p in table.parameters())
    assert table.granularity == "element"  # same density; int32 row pointers, uint8 columns
    return 4 * (rows + 1) + round(table.kept * rows / v) * 5


@pytest.mark.parametrize("name", list(CONFIGS))
def test_projection_to_a_larger_vocabulary(name: str, data: EncodedDataset) -> None:
    from ctrzip.compression.budget.projection import project_bytes, table_bytes_at

    model = compress(make_model(), CONFIGS[name](ratio=2.5, **NO_FT), data)
    own = {f.name: f.vocab_size for f in data.schema.sparse_fields}
    assert project_bytes(model, own) == stored_bytes(model)
    for n in SELECTED:
        table = model.embedding.tables[n]
        assert table_bytes_at(table, table.num_embeddings) == table.nbytes()
        assert table_bytes_at(table, 1000 * table.num_embeddings) == _expected_at(
            table, 1000 * table.num_embeddings
        )


def test_cce_refuses_chunks_that_do_not_divide_the_dim(data: EncodedDataset) -> None:
    with pytest.raises(
        CompressionError, match="cce: num_chunks 3 must divide the embedding dim 8 of field 'user'"
    ):
        compress(make_model(), CCEConfig(num_chunks=3, **NO_FT), data)


@pytest.mark.parametrize("round_auc", [-1.0, 2.0])
def test_a_cce_round_that_validates_worse_is_undone(
    round_auc: float, data: EncodedDataset, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The round's (re-cluster, fine-tune) result replaces the model only when it validates better."""
    import ctrzip.compression.baselines.cce as cce_method

    kw = {**FAST, "ratio": 2.0, "num_chunks": 2, "kmeans_iters": 3, "lr": 1e-2}
    start = compress(make_model(), CCEConfig(**kw, recluster_rounds=0), data)
    metric = {"auc": round_auc, "logloss": 0.5, "n": 192.0}
    monkeypatch.setattr(
        cce_method, "evaluate_and_finetune", lambda *a, **k: {"direct": metric, "finetuned": metric}
    )
    model = compress(make_model(), CCEConfig(**kw, recluster_rounds=1), data)
    report = model.compression_log[-1]["report"]
    same = all(torch.equal(v, start.state_dict()[k]) for k, v in model.state_dict().items())
    generations = {n: model.embedding.tables[n].generation for n in SELECTED}
    first = {n: start.embedding.tables[n].generation for n in SELECTED}
    if round_auc < 0:  # worse: back to the state before the round, hash generation included
        assert report["rounds"][0]["undone"] and same and generations == first
        assert report["metrics"]["final"] == start.compression_log[-1]["report"]["metrics"]["final"]
    else:
        assert not report["rounds"][0]["undone"] and not same
        assert generations == {n: g + 1 for n, g in first.items()}
        assert report["metrics"]["final"] == metric


@pytest.mark.parametrize("name", ["hashing", "qr", "mixed_dim", "dhe", "cce"])
def test_random_starts_are_reproducible_and_leave_the_global_rng_alone(
    name: str, data: EncodedDataset
) -> None:
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = compress(make_model(), CONFIGS[name](init="random", ratio=2.0, **NO_FT), data)
        runs.append((_state(model), torch.rand(3)))
    (a, ra), (b, rb) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(123)
    make_model()
    assert torch.equal(ra, torch.rand(3))  # the build drew nothing from the caller's generator
    other = compress(make_model(), CONFIGS[name](init="random", ratio=2.0, **{**NO_FT, "seed": 7}), data)
    assert any(not torch.equal(v, a[k]) for k, v in other.state_dict().items())


def test_a_budget_the_tables_already_fit_keeps_them_and_says_why(data: EncodedDataset) -> None:
    model = make_model()
    total = sum(model.embedding.tables[n].nbytes() for n in SELECTED)
    with pytest.raises(
        CompressionError, match=r"prune: nothing would be compressed \(.*already within its share"
    ):
        compress(model, PruneConfig(budget_bytes=2 * total, **NO_FT), data)
    assert all(type(t) is DenseTable for t in model.embedding.tables.values())


def test_nothing_shrinking_under_a_ratio_names_the_setting_to_change(data: EncodedDataset) -> None:
    with pytest.raises(CompressionError, match=r"qr: nothing would be compressed .*; lower ratio"):
        compress(make_model(), QRConfig(ratio=50.0, **NO_FT), data)
