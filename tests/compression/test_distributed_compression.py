"""Issue 14 item 2: compression passes run by 2 gloo ranks give the single-process results.

One spawn of two ranks runs every pass (``_dist_worker.run_passes``); the same function in
this process (no process group: every helper is the plain pass) gives the reference, and the
moments and AUC are also checked against the plain ``calibrate`` / ``evaluate``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from ctrzip import distributed as d
from ctrzip.compression.calibrate import calibrate
from ctrzip.compression.sharded import pin_result, shard_split
from ctrzip.compression.stats import RunningMoments
from ctrzip.data.dataset import EncodedDataset, SplitArrays, save_split
from ctrzip.data.loader import BatchLoader
from ctrzip.train.evaluation import evaluate

from . import _dist_worker as w
from .lowrank._lowrank_data import make_dataset, make_model
from .mec._mec_data import make_mec_dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[dict[str, Any]], Path]:
    root = tmp_path_factory.mktemp("dist")
    lr = make_dataset(root / "lr", n_train=400, n_valid=250)
    save_split(root / "lr", "test", lr["valid"])  # the bench grid measures a test split
    (root / "suite.yaml").write_text(w.BENCH_SUITE)
    make_mec_dataset(root / "mec", vocab=300, rows=1500)
    args = (_free_port(), str(root / "lr"), str(root / "mec"), str(root))
    procs = mp.spawn(w.worker, args=args, nprocs=2, join=False)  # the reference runs meanwhile
    threads = torch.get_num_threads()
    try:
        single = w.run_passes(root / "lr", root / "mec")
        w.run_bench_grid(root / "lr", root / "bench1")
    finally:
        torch.set_num_threads(threads)
        while not procs.join():  # raises the error of a rank that failed
            pass
    ranks = [torch.load(root / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    return single, ranks, root


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float) -> None:
    assert int(a["n"]) == int(b["n"])
    for k in ("s1", "s2"):
        err = (a[k] - b[k]).abs().max().item()
        assert err <= tol * max(1.0, b[k].abs().max().item()), (k, err)


def test_shards_are_whole_batches_covering_the_pass_once(runs) -> None:  # type: ignore[no-untyped-def]
    _, ranks, _ = runs
    (a0, b0), (a1, b1) = ranks[0]["shard_rows"], ranks[1]["shard_rows"]
    assert (a0, b0, a1, b1) == (0, 160, 160, 250)  # 7 batches of 40: 4 then 3 (the last partial)


def test_calibration_moments_equal_single_process(runs) -> None:  # type: ignore[no-untyped-def]
    single, ranks, root = runs
    data = EncodedDataset.open(root / "lr")
    model = make_model("deepfm")
    for key, cap in (("moments", None), ("moments_capped", w.CALIB_MAX_BATCHES)):
        ref = w.moment_observers(model)  # the plain single-process pass, independent of sharding
        loader = BatchLoader(data["train"], batch_size=w.BATCH, shuffle=False)
        calibrate(model, ref, loader, max_batches=cap)
        assert set(ranks[0][key]) == set(ref) and len(ref) >= 3
        for fqn, obs in ref.items():
            want = obs.state_dict()
            for r in ranks:
                _close(r[key][fqn], want, 1e-10)
            _close(single[key][fqn], want, 0.0)  # one process: the same code path, bit for bit
    # the cap was honoured: 5 batches of 40 rows, one output row of a Linear per data row
    lin = next(k for k in ranks[0]["moments_capped"] if k != "embedding.tables.tags")
    assert int(ranks[1]["moments_capped"][lin]["n"]) == w.CALIB_MAX_BATCHES * w.BATCH


def test_sharded_validation_auc_is_exact(runs) -> None:  # type: ignore[no-untyped-def]
    _, ranks, root = runs
    want = evaluate(
        make_model("deepfm"), EncodedDataset.open(root / "lr")["valid"], batch_size=w.BATCH, device="cpu"
    )
    for r in ranks:
        assert r["valid"] == want  # AUC and logloss of the gathered logits, not an average


def test_budget_plan_equals_single_process(runs) -> None:  # type: ignore[no-untyped-def]
    single, ranks, _ = runs
    for r in ranks:
        assert r["budget_calibration"] == single["budget_calibration"]  # every plug-in pass exact
        # the same choice, bytes and options per target; an error read off a PCA of all-reduced
        # moments may differ in the last bits (the float64 sum order across ranks)
        for got, want in zip(r["budget"]["plan"], single["budget"]["plan"], strict=True):
            assert {k: v for k, v in got.items() if k != "error"} == {
                k: v for k, v in want.items() if k != "error"
            }
            assert got["error"] == pytest.approx(want["error"], rel=1e-9, abs=1e-12)
        assert r["budget"]["metrics"] == single["budget"]["metrics"]
        assert r["budget"]["bytes"] == single["budget"]["bytes"]
        assert r["budget"]["refine_history"] == single["budget"]["refine_history"]
    assert any(p["representation"] != "float" for p in single["budget"]["plan"])  # something moved


@pytest.mark.parametrize("variant", ["weighted_kmeans", "mec"])
def test_mec_and_kmeans_codes_equal_single_process(variant: str, runs) -> None:  # type: ignore[no-untyped-def]
    single, ranks, _ = runs
    want = single[variant]
    assert want["codes"].unique().numel() > 4  # real codes, not a constant
    for r in ranks:
        got = r[variant]
        assert torch.equal(got["codes"], want["codes"])
        assert got["state"].keys() == want["state"].keys()
        for k, v in want["state"].items():
            assert torch.equal(got["state"][k], v), k
        assert got["plugin"] == want["plugin"]  # the sharded plug-in AUC
        assert got["selected"] == want["selected"]  # stage-1 selection by sharded valid AUC
    if variant == "mec":
        assert want["selected"] is not None  # select_every scored (collective passes inside stage 1)


def test_single_process_helpers_are_identities(tmp_path: Path) -> None:
    split = SplitArrays(np.zeros((10, 2), np.int32), np.zeros((10, 1), np.float32), np.zeros(10, np.float32))
    assert shard_split(split, 4) is split
    assert d.batch_shard(10, 4, max_batches=2) == (0, 8)
    assert d.batch_shard(10, 4) == (0, 10)
    t = torch.arange(3)
    assert d.broadcast_(t) is t and t.tolist() == [0, 1, 2]
    m = RunningMoments()
    assert m.all_reduce_() is m and m.n == 0
    res = w.budget_config()
    assert pin_result(res) is res
    with pytest.raises(ValueError, match="max_batches"):
        d.batch_shard(10, 4, max_batches=0)


TIMINGS = ("seconds", "samples_per_s", "lookup_s_per_batch", "speed_vs_dense", "when")


def test_bench_grid_under_two_ranks_writes_the_single_process_records(runs) -> None:  # type: ignore[no-untyped-def]
    _, _, root = runs
    one = [json.loads(line) for line in (root / "bench1" / "results.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (root / "bench2" / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in two] == ["dense", "int8 rows", "lowrank mlp"]  # rank 0 wrote each once
    for a, b in zip(one, two, strict=True):
        same = {k for k in a if not any(t in k for t in TIMINGS)}
        assert same == {k for k in b if not any(t in k for t in TIMINGS)}
        if a["method"] != "lowrank mlp":
            assert {k: a[k] for k in same} == {k: b[k] for k in same}  # AUCs, bytes: exact
            continue
        # a PCA of all-reduced moments: the basis may differ in the last bits (sum order)
        for k in same:
            if isinstance(a[k], float):
                assert b[k] == pytest.approx(a[k], abs=1e-4), k
            else:
                assert a[k] == b[k], k
    cached = list((root / "bench2" / "dense").iterdir())
    assert len(cached) == 1 and (cached[0] / "manifest.json").exists()


@pytest.mark.parametrize("key", ["cce", "mixed"])
def test_other_kmeans_fits_equal_single_process(key: str, runs) -> None:  # type: ignore[no-untyped-def]
    single, ranks, _ = runs
    want = single[key]
    for r in ranks:
        assert r[key]["state"].keys() == want["state"].keys()
        for k, v in want["state"].items():
            assert torch.equal(r[key]["state"][k], v), k
        assert r[key]["metrics"] == want["metrics"]


def test_empty_shard_still_combines(runs) -> None:  # type: ignore[no-untyped-def]
    single, ranks, root = runs
    split = EncodedDataset.open(root / "lr")["valid"]
    head = w.shard_free_head(split, 30)
    want = evaluate(make_model("deepfm"), head, batch_size=w.BATCH, device="cpu")
    assert want["n"] == 30
    for r in ranks:
        assert r["tiny_valid"] == want  # rank 1 scored nothing and still took part
        for fqn, m in single["tiny_moments"].items():
            _close(r["tiny_moments"][fqn], m, 1e-10)


def test_pinning_gives_every_rank_rank_zeros_values(runs) -> None:  # type: ignore[no-untyped-def]
    _, ranks, _ = runs
    for r in ranks:
        p = r["pinned"]
        assert torch.equal(p["weight"], torch.ones(2, 3)) and torch.equal(p["bias"], -torch.ones(2))
        assert p["mask"].tolist() == [True, False] and p["mask"].dtype == torch.bool
        assert torch.equal(p["codes"], torch.zeros(2, 2, dtype=torch.int64)) and p["note"] == "rank 0"
