"""Distributed training (issue 14): the global batch schedule, 2-rank gloo runs equal to one
process, rank 0 alone writes, resume across rank counts, and a dead or stalled rank."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from ctrzip import distributed as d
from ctrzip.config import ConfigError
from ctrzip.data.dataset import EncodedDataset, SplitArrays, save_split
from ctrzip.data.loader import BatchLoader
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.errors import TrainingError
from ctrzip.models.base import build_model
from ctrzip.train import checkpoint as ckpt
from ctrzip.train.distributed import DistributedTrainer, ShardedLoader, evaluate_split, setup, trainer_for
from ctrzip.train.trainer import TrainConfig, Trainer, evaluate

SCHEMA = FeatureSchema(fields=tuple(FieldSpec(f"f{i}", "categorical", vocab_size=12) for i in range(4)))
MODEL = {"embedding_dim": 4, "mlp": [16]}
# global batch 37 (odd: the ranks' slices differ in size), 301 rows: a short last batch
BASE = {"epochs": 2, "batch_size": 37, "lr": 0.01, "progress": False, "device": "cpu", "seed": 5,
        "early_stop_patience": 5}  # fmt: skip
PARTIAL_STEPS = 11  # stop mid-epoch 2 (9 steps per epoch), resume later


def _split(n: int, seed: int) -> SplitArrays:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 12, size=(n, 4))
    logit = np.where(ids[:, 0] == ids[:, 1], 2.0, -1.0) + 0.2 * (ids[:, 2] - 6)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return SplitArrays(ids.astype(np.int32), np.zeros((n, 0), np.float32), label)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp") / "enc"
    root.mkdir()
    SCHEMA.save(root / "feature_map.json")
    for i, (name, n) in enumerate({"train": 301, "valid": 150, "test": 150}.items()):
        save_split(root, name, _split(n, seed=i))
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(root: Path, **cfg: Any) -> dict[str, Any]:
    """One training on this process's rank (or alone): history, test metrics, weights."""
    tcfg = setup(TrainConfig(**{**BASE, **cfg}))
    ds = EncodedDataset.open(root)
    model = build_model("deepfm", ds.schema, MODEL, seed=tcfg.seed)
    hist = trainer_for(tcfg).fit(model, ds["train"], ds["valid"])
    test = evaluate_split(model, ds["test"], batch_size=64, device="cpu", name="test split")
    return {
        "val_auc": [r["val_auc"] for r in hist.epochs],
        "loss": [r["train_loss"] for r in hist.epochs],
        "steps": hist.steps,
        "test": test,
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _env(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)


def _runs_worker(rank: int, port: int, root: str, tmp: str, out: dict) -> None:
    """Every 2-rank training the tests compare, in one process group (one spawn)."""
    _env(rank, port)
    writes: list[str] = []
    real_save, real_append = ckpt.atomic_save, ckpt.append_jsonl

    def save(obj: dict, path: Any) -> Path:
        writes.append(str(path))
        return real_save(obj, path)

    def append(path: Any, record: dict) -> None:
        writes.append(str(path))
        real_append(path, record)

    ckpt.atomic_save, ckpt.append_jsonl = save, append
    res = {"full": _train(Path(root), out_dir=f"{tmp}/full")}
    res["partial"] = _train(Path(root), out_dir=f"{tmp}/partial", max_steps=PARTIAL_STEPS)
    _train(Path(root), out_dir=f"{tmp}/again", max_steps=PARTIAL_STEPS)
    res["resumed"] = _train(Path(root), out_dir=f"{tmp}/again")  # same 2 ranks, limit raised
    try:  # rank 0 alone reads the saved run: the other rank must stop too, with its reason
        _train(Path(root), out_dir=f"{tmp}/again", lr=0.02)
        res["changed"] = "resumed"
    except TrainingError as err:
        res["changed"] = str(err)
    try:  # every rank diverges at the same step (the loss is all-reduced) and says so alike
        _train(Path(root), out_dir=f"{tmp}/div", lr=1e30, clip_grad_norm=None, eval_at_start=True)
        res["diverged"] = "trained"
    except TrainingError as err:
        res["diverged"] = str(err)
    res["writes"] = writes
    out[rank] = res
    d.shutdown()


@pytest.fixture(scope="module")
def two_ranks(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("ddp_runs")
    with mp.Manager() as mgr:
        out = mgr.dict()
        mp.spawn(_runs_worker, args=(_free_port(), str(data), str(tmp), out), nprocs=2, join=True)
        return dict(out), tmp


@pytest.fixture(scope="module")
def one_process(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(data, out_dir=str(tmp_path_factory.mktemp("single") / "run"))
    finally:
        torch.set_num_threads(prev)


# ------------------------------------------------------------------ schedule (no processes)
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n,bs", [(301, 37), (10, 4), (9, 4)])
def test_rank_slices_union_is_the_single_process_batch(world: int, n: int, bs: int) -> None:
    split = _split(n, seed=3)
    single = BatchLoader(split, bs, shuffle=True, seed=9, merge_single_last=True, block_batches=2)
    loaders = [ShardedLoader(split, bs, shuffle=True, seed=9, block_batches=2, rank=r, world=world)
               for r in range(world)]  # fmt: skip
    for epoch in (0, 1):
        single.set_epoch(epoch)
        seen = []
        for ld in loaders:
            ld.set_epoch(epoch)
        ref = list(single)
        assert all(len(ld) == len(ref) for ld in loaders)
        per_rank = [list(ld) for ld in loaders]
        for step, batch in enumerate(ref):
            owners = [r for r in range(world) if len(range(*d.shard_bounds(len(batch), r, world)))]
            real = [per_rank[r][step] for r in owners]  # ranks without a row hold a stand-in
            union = torch.cat([p.sparse for p in real])
            assert torch.equal(union, batch.sparse)  # same rows, same order as one process
            assert torch.equal(torch.cat([p.label for p in real]), batch.label)
            seen.append(union)
        rows = torch.cat(seen)
        # every row once per epoch: the union over steps is a permutation of the split
        ref_rows = torch.from_numpy(split.sparse.astype(np.int64))
        key = rows.long() @ torch.tensor([1, 12, 144, 1728])
        ref_key = ref_rows @ torch.tensor([1, 12, 144, 1728])
        assert torch.equal(key.sort().values, ref_key.sort().values)


@pytest.mark.parametrize("n,bs,drop_last", [(10, 4, False), (9, 4, False), (10, 4, True), (8, 4, False)])
def test_global_batch_sizes_are_what_the_loader_yields(n: int, bs: int, drop_last: bool) -> None:
    ld = ShardedLoader(_split(n, seed=0), bs, shuffle=True, seed=1, drop_last=drop_last, rank=0, world=1)
    assert ld.global_batch_sizes() == [len(b) for b in ld]


def test_an_empty_slice_gets_a_zero_weight_stand_in() -> None:
    split = _split(9, seed=1)  # batch 4: steps of 4, 4 and 1 -> 4 and 5 (merged)
    last = ShardedLoader(split, 4, shuffle=False, seed=0, rank=4, world=5)
    sizes = []
    for batch in last:
        sizes.append((len(batch), last.step_rows))
    # global batches 4 and 5 rows; rank 4 of 5 owns no row of the 4-row batch
    assert sizes == [(1, (4, 0)), (1, (5, 1))]


# ------------------------------------------------------------------ 2 ranks vs one process
def test_two_ranks_equal_one_process(two_ranks: tuple[dict, Path], one_process: dict) -> None:
    res, _ = two_ranks
    for rank in (0, 1):
        full = res[rank]["full"]
        assert full["steps"] == one_process["steps"] == BASE["epochs"] * -(-301 // BASE["batch_size"])
        assert np.allclose(full["val_auc"], one_process["val_auc"], atol=1e-4, rtol=0)
        assert np.allclose(full["loss"], one_process["loss"], atol=1e-5, rtol=0)
        assert abs(full["test"]["auc"] - one_process["test"]["auc"]) < 1e-4
        assert full["test"]["n"] == 150.0
        for k, w in one_process["weights"].items():
            torch.testing.assert_close(full["weights"][k], w, atol=1e-5, rtol=1e-4)
    # both ranks hold the same model and the same gathered metrics
    assert res[0]["full"]["test"] == res[1]["full"]["test"]


def test_gathered_auc_is_the_whole_split_auc(two_ranks: tuple[dict, Path], data: Path) -> None:
    """The metrics of the 2-rank run equal an independent one-process evaluation of its model."""
    res, _ = two_ranks
    ds = EncodedDataset.open(data)
    model = build_model("deepfm", ds.schema, MODEL, seed=BASE["seed"])
    model.load_state_dict(res[0]["full"]["weights"])
    ref = evaluate(model, ds["test"], batch_size=1000, device="cpu")
    assert abs(res[0]["full"]["test"]["auc"] - ref["auc"]) < 1e-9
    assert abs(res[0]["full"]["test"]["logloss"] - ref["logloss"]) < 1e-9


def test_rank_zero_alone_writes(two_ranks: tuple[dict, Path]) -> None:
    res, tmp = two_ranks
    assert res[1]["writes"] == []
    names = {Path(p).name for p in res[0]["writes"]}
    assert names == {ckpt.BEST, ckpt.LAST, ckpt.METRICS}
    assert {Path(p).parent.name for p in res[0]["writes"]} == {"full", "partial", "again", "div"}
    assert sorted(p.name for p in (tmp / "full").iterdir()) == [ckpt.BEST, ckpt.LAST, ckpt.METRICS]
    records = [json.loads(line) for line in (tmp / "full" / ckpt.METRICS).read_text().splitlines()]
    assert [r["val_auc"] for r in records] == res[0]["full"]["val_auc"]  # one line per eval, once


def test_resume_two_rank_checkpoint_on_two_and_on_one_rank(
    two_ranks: tuple[dict, Path], one_process: dict, data: Path, tmp_path: Path
) -> None:
    res, tmp = two_ranks
    assert res[0]["partial"]["steps"] == PARTIAL_STEPS
    again = res[0]["resumed"]  # 2-rank checkpoint resumed on 2 ranks
    for k, w in again["weights"].items():  # rank 0 broadcast its optimizer state: same updates
        assert torch.equal(res[1]["resumed"]["weights"][k], w), k
    assert np.allclose(again["val_auc"][-1], one_process["val_auc"][-1], atol=1e-4, rtol=0)
    # 2-rank checkpoint resumed by one process: the run finishes as if never interrupted
    torch.set_num_threads(1)
    resumed = _train(data, out_dir=str(tmp / "partial"))
    assert resumed["steps"] == one_process["steps"]
    assert abs(resumed["test"]["auc"] - one_process["test"]["auc"]) < 1e-4
    for k, w in one_process["weights"].items():
        torch.testing.assert_close(resumed["weights"][k], w, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ a rank dies or stalls
def _dying_worker(rank: int, port: int, root: str, how: str, timeout: float, out: dict) -> None:
    _env(rank, port)
    real_step = DistributedTrainer._step
    calls = [0]

    def step(self: DistributedTrainer, model: Any, batch: Any) -> Any:
        calls[0] += 1
        if rank == 1 and calls[0] == 4:
            os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        return real_step(self, model, batch)

    DistributedTrainer._step = step  # type: ignore[method-assign]
    t0 = time.monotonic()
    try:
        _train(Path(root), dist_timeout_s=timeout, epochs=50, early_stop_patience=50)
        out[rank] = ("finished", "", time.monotonic() - t0)
    except TrainingError as err:
        out[rank] = ("error", str(err), time.monotonic() - t0)


def test_a_dead_or_stalled_rank_stops_the_other_with_one_clear_line(data: Path) -> None:
    """Rank 1 is killed (its connections close) in one job and stopped with SIGSTOP (it holds
    them open: only the timeout can tell) in another; both jobs run at once to save time."""
    timeout = 4.0
    ctx = mp.get_context("spawn")
    with mp.Manager() as mgr:
        outs = {how: mgr.dict() for how in ("kill", "stop")}
        procs = {}
        for how, out in outs.items():
            port = _free_port()
            procs[how] = [ctx.Process(target=_dying_worker, args=(r, port, str(data), how, timeout, out))
                          for r in (0, 1)]  # fmt: skip
        for pair in procs.values():
            for p in pair:
                p.start()
        hung = []
        for how, pair in procs.items():
            pair[0].join(timeout=120)
            if pair[0].is_alive():
                hung.append(how)
            for p in pair:
                if p.is_alive():
                    p.kill()
                p.join()
        assert not hung, f"rank 0 hung after rank 1 died ({hung})"
        results = {how: out[0] for how, out in outs.items()}
    for how, (status, msg, _) in results.items():
        assert status == "error", how
        assert "\n" not in msg
        assert msg.startswith("rank 0 of 2: a collective failed"), msg
        assert "train.dist_timeout_s=4 s" in msg
    assert "4000ms" in results["stop"][1]  # gloo's own timeout: the setting reached the collectives


# ------------------------------------------------------------------ refused settings
def test_batch_smaller_than_world_is_refused(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(d, "world_size", lambda: 4)
    ds = EncodedDataset.open(data)
    model = build_model("deepfm", ds.schema, MODEL, seed=0)
    with pytest.raises(ConfigError, match="train.batch_size=3 is the global batch.*4 ranks"):
        DistributedTrainer(TrainConfig(**{**BASE, "batch_size": 3})).fit(model, ds["train"], ds["valid"])


def test_batch_norm_with_one_row_per_rank_is_refused(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(d, "world_size", lambda: 4)
    ds = EncodedDataset.open(data)
    model = build_model("deepfm", ds.schema, {**MODEL, "batch_norm": True}, seed=0)
    with pytest.raises(TrainingError, match=r"BatchNorm.*train.batch_size=6 .* 1 row\(s\) on 4 ranks"):
        DistributedTrainer(TrainConfig(**{**BASE, "batch_size": 6})).fit(model, ds["train"], ds["valid"])


def test_a_changed_setting_stops_every_rank(two_ranks: tuple[dict, Path]) -> None:
    res, tmp = two_ranks
    assert "train.lr 0.01 -> 0.02" in res[0]["changed"]
    assert res[1]["changed"].startswith("rank 0 stopped before training: ")
    assert "train.lr 0.01 -> 0.02" in res[1]["changed"]


def test_divergence_is_reported_alike_on_every_rank(two_ranks: tuple[dict, Path]) -> None:
    res, tmp = two_ranks
    msg = res[0]["diverged"]
    assert msg.startswith("training diverged: ") and "at epoch 1, step " in msg
    assert f"last finite checkpoint: {tmp / 'div' / ckpt.LAST} (step 0)" in msg
    assert res[1]["diverged"] == msg


def test_one_process_distributed_trainer_equals_trainer(data: Path) -> None:
    """Without a process group DistributedTrainer takes Trainer's steps (its loss is the
    global-batch sum over the global rows, here all of them)."""
    ds = EncodedDataset.open(data)
    weights = []
    for cls in (Trainer, DistributedTrainer):
        model = build_model("deepfm", ds.schema, MODEL, seed=1)
        cls(TrainConfig(**BASE)).fit(model, ds["train"], ds["valid"])
        weights.append(model.state_dict())
    for k, w in weights[0].items():
        torch.testing.assert_close(weights[1][k], w, atol=1e-6, rtol=1e-5)


def test_bad_timeout_is_named() -> None:
    with pytest.raises(ConfigError, match="dist_timeout_s must be > 0"):
        TrainConfig(dist_timeout_s=0)


def test_one_process_uses_the_plain_trainer() -> None:
    assert type(trainer_for(TrainConfig())) is Trainer


# ------------------------------------------------------------------ the command line
def test_torchrun_ctrzip_train_end_to_end(data: Path, tmp_path: Path, one_process: dict) -> None:
    """``torchrun --nproc-per-node 2 -m ctrzip train`` trains, rank 0 alone prints the metrics
    and saves the artifact, and its test AUC equals the one-process run's."""
    cfg = tmp_path / "run.yaml"
    body = {"dataset": str(data), "model": {"name": "deepfm", "params": MODEL},
            "train": {**BASE, "out_dir": str(tmp_path / "run")}}  # fmt: skip
    cfg.write_text(json.dumps(body))
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "COLUMNS": "200"}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "ctrzip", "train", "--config", str(cfg), "--set", "train.dist_timeout_s=60"]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("metrics") == 1, res.stdout  # one table: rank 1 printed nothing
    manifest = json.loads((tmp_path / "run" / "model" / "manifest.json").read_text())
    auc = manifest["extra"]["metrics"]["test"]["auc"]
    assert abs(auc - one_process["test"]["auc"]) < 1e-4
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == [ckpt.BEST, ckpt.LAST, ckpt.METRICS, "model"]
