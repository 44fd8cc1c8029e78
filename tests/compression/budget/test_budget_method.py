"""Method ``budget``: the budget holds on the saved artifact, plans are exact, errors are clear."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open

import ctrzip
from ctrzip.compression.budget import BudgetConfig
from ctrzip.compression.lowrank.factorized import probe_batch
from ctrzip.compression.sizes import size_report
from ctrzip.errors import CompressionError
from ctrzip.train.trainer import TrainConfig, Trainer

from ..lowrank._lowrank_data import make_dataset, make_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):  # type: ignore[no-untyped-def]
    data = make_dataset(tmp_path_factory.mktemp("budget"), n_train=2000, n_valid=1500)
    model = make_model("deepfm")
    Trainer(TrainConfig(epochs=2, lr=3e-3, progress=False, seed=0)).fit(model, data["train"], data["valid"])
    return data, model.eval()


def _saved_tensor_bytes(path) -> int:  # type: ignore[no-untyped-def]
    total = 0
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        for k in f.keys():  # noqa: SIM118  (safe_open is not a dict)
            t = f.get_tensor(k)
            total += t.numel() * t.element_size()
    return total


@pytest.mark.parametrize("fraction", [0.6, 0.35])
def test_budget_holds_on_the_saved_artifact(fraction, setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data, trained = setup
    model = copy.deepcopy(trained)
    budget = fraction * size_report(model)["total"]["bytes"] / 2**20
    ctrzip.compress(model, BudgetConfig(mb=budget, calib_rows=1000), data)
    report = model.compression_log[-1]["report"]
    assert report["bytes"]["after"] <= budget * 2**20
    assert report["bytes"]["after"] == report["bytes"]["fixed"] + sum(p["bytes"] for p in report["plan"])
    batch = probe_batch(data.schema, 64, torch.device("cpu"))
    with torch.no_grad():
        expect = model(batch)
    ctrzip.save(tmp_path / "m", model)
    assert _saved_tensor_bytes(tmp_path / "m") == report["bytes"]["after"]
    loaded = ctrzip.load(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), expect, rtol=0, atol=0)
    json.dumps(report)  # the report is JSON-able (it goes into the manifest)


def test_larger_budget_never_predicts_more_loss(setup) -> None:  # type: ignore[no-untyped-def]
    data, trained = setup
    total = size_report(trained)["total"]["bytes"] / 2**20
    losses = []
    for fraction in (0.3, 0.5, 0.8):
        model = copy.deepcopy(trained)
        ctrzip.compress(model, BudgetConfig(mb=fraction * total, calib_rows=1000), data)
        losses.append(sum(p["predicted_auc_loss"] for p in model.compression_log[-1]["report"]["plan"]))
    assert losses[0] >= losses[1] >= losses[2]


def test_impossible_budget_names_the_smallest_reachable_size(setup) -> None:  # type: ignore[no-untyped-def]
    data, trained = setup
    model = copy.deepcopy(trained)
    with pytest.raises(CompressionError, match=r"smallest reachable model is [\d,]+ B"):
        ctrzip.compress(model, BudgetConfig(mb=1e-5, calib_rows=1000), data)
    torch.testing.assert_close(  # refused before touching the model
        model.embedding.tables["item"].weight, trained.embedding.tables["item"].weight, rtol=0, atol=0
    )


def test_loss_mode_meets_a_generous_cap(setup) -> None:  # type: ignore[no-untyped-def]
    data, trained = setup
    model = copy.deepcopy(trained)
    ctrzip.compress(model, BudgetConfig(max_auc_loss=0.01, calib_rows=1000), data)
    r = model.compression_log[-1]["report"]
    assert r["metrics"]["before"]["auc"] - r["metrics"]["direct"]["auc"] <= 0.01
    assert r["bytes"]["after"] < r["bytes"]["before"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({}, "exactly one of mb"), ({"mb": 1.0, "max_auc_loss": 0.1}, "exactly one of mb"),
     ({"mb": -1.0}, "mb must be > 0"), ({"mb": 1.0, "pq": ("4by256",)}, "look like '4x256'")],
)  # fmt: skip
def test_bad_config_refused(kwargs, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CompressionError, match=message):
        BudgetConfig(**kwargs)


def test_head_size_and_banded_candidates_are_exact() -> None:
    from ctrzip.compression.budget.candidates import head_size, table_candidates
    from ctrzip.nn.embedding.base import DenseTable

    v = 500
    counts = torch.zeros(v)
    counts[1:-1] = 1000.0 / torch.arange(1, v - 1).float() ** 1.2  # ids sorted by frequency
    h = head_size(counts, 0.8)
    share = counts[1:h].sum() / counts[1:-1].sum()
    assert share >= 0.8 > counts[1 : h - 1].sum() / counts[1:-1].sum()  # the smallest such head
    table = DenseTable.from_tensor(torch.randn(v, 8, generator=torch.Generator().manual_seed(0)))
    cands = table_candidates(table, counts, bits=(), bands=(0.8,))
    banded = [c for c in cands if c.name.startswith("bands@0.8")]
    assert len(banded) == 6  # four two-band and two three-band layouts
    triples = [c for c in banded if c.name.startswith("bands@0.8/0.99 ")]
    assert len(triples) == 2
    t = head_size(counts, 0.99)
    assert h < t < v - 1
    for c in triples:  # head | mid | shared deepest tail | float OOV row, at the two shares
        assert [(b.start, b.end) for b in c.build().plan] == [(0, h), (h, t), (t, v - 1), (v - 1, v)]
    for c in banded:
        built = c.build()
        assert built.nbytes() == c.nbytes < table.nbytes()
        stored = sum(t.numel() * t.element_size() for t in built.state_dict().values())
        assert stored == c.nbytes
    # one shared tail vector loses more than a 256-word PQ tail under the same int8 head
    err = {c.name.split(" ")[1]: c.error for c in banded if c not in triples}
    assert err["rowwisebits8+sharedS1"] > err["rowwisebits8+pqM1K256"] > err["rowwisebits8+pqM2K256"]


def test_one_search_answers_several_goals_like_separate_runs(setup) -> None:  # type: ignore[no-untyped-def]
    from ctrzip.compression.budget import BudgetSearch

    data, trained = setup
    batch = probe_batch(data.schema, 64, torch.device("cpu"))
    with torch.no_grad():
        original = trained(batch)
    total = size_report(trained)["total"]["bytes"] / 2**20
    search = BudgetSearch(copy.deepcopy(trained), data, BudgetConfig(mb=1, calib_rows=1000))
    for goal in ({"mb": 0.5 * total}, {"max_auc_loss": 0.002}, {"mb": 0.3 * total}):
        report = search.apply(**goal)
        alone = copy.deepcopy(trained)
        ctrzip.compress(alone, BudgetConfig(**goal, calib_rows=1000), data)
        expect = alone.compression_log[-1]["report"]
        assert [p["representation"] for p in report["plan"]] == [p["representation"] for p in expect["plan"]]
        assert report["bytes"] == expect["bytes"]
        search.restore()
        with torch.no_grad():  # restore puts back the very modules: outputs are bit-identical
            torch.testing.assert_close(search.model(batch), original, rtol=0, atol=0)
    with pytest.raises(CompressionError, match="exactly one"):
        search.apply()


def test_first_order_codebook_is_exact_in_bytes_and_uses_sixteen_values() -> None:
    from ctrzip.compression.budget.candidates import codebook_candidate
    from ctrzip.nn.embedding.base import DenseTable

    v = 3000
    g = torch.Generator().manual_seed(0)
    table = DenseTable.from_tensor(torch.randn(v, 1, generator=g))
    counts = torch.zeros(v)
    counts[1:-1] = 1000.0 / torch.arange(1, v - 1).float()
    cand = codebook_candidate(table, counts, bits=4)
    built = cand.build()
    stored = sum(t.numel() * t.element_size() for t in built.state_dict().values())
    assert cand.nbytes == built.nbytes() == stored
    assert stored < (v * 2) // 2  # well under fp16 (2 B per id): about half a byte per id
    rows = built.materialize()
    assert rows[0].abs().max() == 0  # padding stays zero
    assert rows[-1].item() == table.weight[-1].item()  # the OOV row stays float
    assert torch.unique(rows[1:-1]).numel() <= 16
    assert cand.error < 0.05  # 16 levels fit a 1-D Gaussian column closely


def test_deepfm_first_order_group_offers_fp16_and_codebook(setup) -> None:  # type: ignore[no-untyped-def]
    data, trained = setup
    model = copy.deepcopy(trained)
    ctrzip.compress(model, BudgetConfig(max_auc_loss=0.002, calib_rows=1000), data)
    report = model.compression_log[-1]["report"]
    first = next(p for p in report["plan"] if p["target"] == "first_order")
    names = [o["name"] for o in first["options"]]
    assert names[0] == "float" and "fp16" in names
    sizes = {o["name"]: o["bytes"] for o in first["options"]}
    if "codebook4" in sizes:  # offered where a field has more ids than codewords
        assert sizes["codebook4"] < sizes["fp16"] < sizes["float"]
