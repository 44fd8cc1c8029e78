"""What each rank of the 2-process gloo test runs (a module of its own, so spawn can import it).

Every distributed pass of compression is run once on tiny data; each rank saves what it got
to ``out/rank{r}.pt``. The test computes the single-process results itself and compares.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ctrzip import distributed as d
from ctrzip.compression import compress
from ctrzip.compression.baselines import CCEConfig
from ctrzip.compression.budget import BudgetConfig
from ctrzip.compression.budget.search import BudgetSearch
from ctrzip.compression.calibrate import IdMaskedMoments
from ctrzip.compression.mec.method import MECConfig
from ctrzip.compression.mixed import MixedConfig
from ctrzip.compression.select import mlp_linears
from ctrzip.compression.sharded import pin_result, sharded_calibrate, sharded_evaluate
from ctrzip.compression.stats import RunningMoments
from ctrzip.data.dataset import EncodedDataset, SplitArrays
from ctrzip.models.base import CTRModel, build_model

from .lowrank._lowrank_data import make_model

BATCH = 40  # 250 valid rows -> 7 batches (the last one partial): 4 on rank 0, 3 on rank 1
CALIB_MAX_BATCHES = 5  # a cap that cuts the training pass: 3 on rank 0, 2 on rank 1
MEC_FAST = {"steps": 4, "select_every": 2, "batch_size": 64, "kmeans_iters": 4, "num_negatives": 4}


def moment_observers(model: CTRModel) -> dict[str, RunningMoments]:
    """Every MLP Linear plus the sequence table (padding lookups masked)."""
    obs: dict[str, RunningMoments] = {fqn: RunningMoments() for fqn in dict(mlp_linears(model))}
    obs["embedding.tables.tags"] = IdMaskedMoments(0)
    return obs


def mec_model(data: EncodedDataset) -> CTRModel:
    torch.manual_seed(3)
    return build_model("deepfm", data.schema, {"embedding_dim": 8, "mlp": [16]}).eval()


def mec_config(variant: str) -> MECConfig:
    extra = MEC_FAST if variant == "mec" else {}
    return MECConfig.variant(
        variant,
        min_vocab=100,
        num_subspaces=2,
        codebook_size=16,
        protocol="none",
        plugin_per_field=False,
        eval_batch_size=BATCH,
        device="cpu",
        progress=False,
        **extra,
    )


def other_fits() -> dict[str, Any]:
    """CCE (k-means of chunks, one re-clustering round) and mixed bands (a k-means PQ band)."""
    plan = [
        {"start": 0, "end": 10, "representation": "rowwise", "params": {"bits": 8}},
        {"start": 10, "end": 60, "representation": "pq", "params": {"M": 2, "K": 8}},
    ]
    return {
        "cce": CCEConfig(
            num_chunks=2, kmeans_iters=4, recluster_rounds=1, finetune_epochs=0, batch_size=BATCH,
            min_vocab=20, device="cpu",
        ),
        "mixed": MixedConfig(plans={"item": plan}, batch_size=BATCH, device="cpu"),
    }  # fmt: skip


def metrics_of(model: CTRModel) -> Any:
    return model.compression_log[-1]["report"]["metrics"]


def shard_free_head(split: SplitArrays, n: int) -> SplitArrays:
    return SplitArrays(split.sparse[:n], split.dense[:n], split.label[:n])


def budget_config() -> BudgetConfig:
    return BudgetConfig(max_auc_loss=0.002, calib_rows=1000, batch_size=BATCH, device="cpu")


def run_passes(lr_root: Path, mec_root: Path) -> dict[str, Any]:
    """Every pass under test, in a fixed order (the same in one process and on every rank)."""
    torch.set_num_threads(1)
    lr, mec = EncodedDataset.open(lr_root), EncodedDataset.open(mec_root)
    out: dict[str, Any] = {}
    model = make_model("deepfm")
    for key, cap in (("moments", None), ("moments_capped", CALIB_MAX_BATCHES)):
        obs = sharded_calibrate(
            model, moment_observers(model), lr["train"], batch_size=BATCH, device=torch.device("cpu"),
            max_batches=cap,
        )  # fmt: skip
        out[key] = {fqn: o.state_dict() for fqn, o in obs.items()}
    out["valid"] = sharded_evaluate(model, lr["valid"], batch_size=BATCH, device="cpu")
    search = BudgetSearch(copy.deepcopy(model), lr, budget_config())
    before, losses, _ = search.calibrate()
    out["budget_calibration"] = {"before": before, "losses": losses}
    rep = search.apply(max_auc_loss=0.002)
    out["budget"] = {k: rep[k] for k in ("plan", "metrics", "bytes", "refine_history")}
    for key, cfg in other_fits().items():  # k-means fitted on every rank, pinned to rank 0's
        m = copy.deepcopy(model)
        compress(m, cfg, lr)
        out[key] = {"state": {k: v.clone() for k, v in m.state_dict().items()}, "metrics": metrics_of(m)}
    # more ranks than batches: rank 1's shard is empty (one batch of 30 rows)
    tiny = shard_free_head(lr["valid"], 30)
    out["tiny_valid"] = sharded_evaluate(model, tiny, batch_size=BATCH, device="cpu")
    cpu = torch.device("cpu")
    obs = sharded_calibrate(model, moment_observers(model), tiny, batch_size=BATCH, device=cpu)
    out["tiny_moments"] = {fqn: o.state_dict() for fqn, o in obs.items()}
    for variant in ("weighted_kmeans", "mec"):
        m = mec_model(mec)
        compress(m, mec_config(variant), mec)
        table = m.embedding.tables["big"]
        report = m.compression_log[-1]["report"]
        out[variant] = {
            "codes": table.codes.clone(),
            "state": {k: v.clone() for k, v in m.state_dict().items()},
            "plugin": report["plugin"],
            "selected": report["fields"]["big"]["stage1"]["selected"],
        }
    return out


BENCH_SUITE = """\
description: tiny suite under torchrun
dense: {embedding_dim: 4, mlp: [8], epochs: 1, lr: 1.0e-2, batch_size: 128}
timing: {batch_size: 10000, rounds: 1, threads: 1}
cells:
  - label: int8 rows
    steps: [{method: int8, settings: {eval_split: null}}]
  - label: lowrank mlp
    steps: [{method: lowrank, settings: {rank: 4, finetune_epochs: 0, batch_size: 40}}]
"""


def run_bench_grid(data: Path, out: Path) -> None:
    """``BENCH_SUITE`` (a dense model and two cells) over ``data``, results to ``out``."""
    from ctrzip.bench.runner import run_bench
    from ctrzip.bench.suite import load_suite

    torch.set_num_threads(1)
    suite = load_suite(data.parent / "suite.yaml")
    run_bench([suite], data, ["deepfm"], [0], out, device="cpu", say=lambda _: None)


@dataclass
class _Fit:
    codes: torch.Tensor
    note: str


def pinned_by_rank(rank: int) -> dict[str, Any]:
    """A module and a fit result that differ per rank, after pinning to rank 0's."""
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.fill_(float(rank + 1))
        lin.bias.fill_(-float(rank + 1))
    lin.register_buffer("mask", torch.tensor([rank == 0, rank == 1]))  # bool: sent as uint8
    d.broadcast_module_(lin)
    fit = pin_result(_Fit(torch.full((2, 2), rank, dtype=torch.int64), f"rank {rank}"))
    return {"weight": lin.weight.detach().clone(), "bias": lin.bias.detach().clone(),
            "mask": lin.mask.clone(), "codes": fit.codes, "note": fit.note}  # fmt: skip


def worker(rank: int, port: int, lr_root: str, mec_root: str, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    ctx = d.init_from_env(torch.device("cpu"), timeout_s=120)
    assert ctx is not None and ctx.world_size == 2
    try:
        res = run_passes(Path(lr_root), Path(mec_root))
        res["shard_rows"] = d.batch_shard(250, BATCH)
        res["pinned"] = pinned_by_rank(rank)
        run_bench_grid(Path(lr_root), Path(out_dir) / "bench2")
        torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()
