"""CPU inference throughput of compressed models against the dense model, fused and per-field.

One run builds (or reuses from ``--cache``) a trained DeepFM and its compressed forms:
MEC (PQ ``M=4 K=256`` on every field with at least ``--min-vocab`` ids, shared first-order
codes), the budget method's plan (smallest model within ``--max-auc-loss`` validation AUC),
MEC + low-rank MLP (feature mimicking with its default targets, which keep the tower's first
layer, and with every hidden layer), and int8 / int4 row-wise tables; each is timed with fused lookups on and
off (``FieldEmbedding.fuse``) at batch ``--batch-size``.

Timing: every (model, fuse) pair is timed in rounds that alternate between them, and the
ratio to the dense model (fused, the default) is taken per round before the median, so slow
drifts in machine load (a shared 2-core CPU) cancel. Forward only, eval mode,
``inference_mode``, fixed threads, warm-up excluded (``ctrzip.bench.timing.time_forward``).
A per-part breakdown (time inside each top-level child module: embedding, first order, MLP;
the rest is the model's own glue such as the FM term) says where the time goes.

    python benchmarks/bench_inference.py --threads 1,2 --cache /tmp/bench_inference_models
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ctrzip.bench.timing import time_forward
from ctrzip.compression import compress
from ctrzip.compression.budget import BudgetConfig
from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
from ctrzip.compression.mec.method import MECConfig
from ctrzip.compression.mec.stage1 import CodeLearningConfig
from ctrzip.compression.quantize.method import RowwiseConfig
from ctrzip.compression.sizes import size_report
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.loader import BatchLoader
from ctrzip.export import artifact
from ctrzip.models.base import build_model
from ctrzip.nn.embedding.fused_plan import set_fuse
from ctrzip.train.train_config import TrainConfig
from ctrzip.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_tag, write_result  # noqa: E402

DEMO = Path.home() / ".cache/ctrzip/demo-criteo-like-400000-s0/encoded"


def _cached(cache: Path | None, name: str, make):  # type: ignore[no-untyped-def]
    """``make()``, saved as an artifact under ``cache/name`` and loaded from there next time."""
    if cache is not None and (cache / name / "manifest.json").exists():
        return artifact.load(cache / name)
    t0 = time.perf_counter()
    model = make()
    print(f"built {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    if cache is not None:
        artifact.save(cache / name, model, overwrite=True)
    return model


def candidates(data: EncodedDataset, args: argparse.Namespace) -> dict[str, nn.Module]:
    quick = {"finetune_epochs": 0, "eval_split": None, "device": "cpu"}

    def dense() -> nn.Module:
        torch.manual_seed(0)
        mlp = [int(x) for x in args.mlp.split(",")]
        m = build_model(args.model, data.schema, {"embedding_dim": args.dim, "mlp": mlp})
        cfg = TrainConfig(epochs=1, device="cpu", progress=False, max_steps=args.train_steps)
        Trainer(cfg).fit(m, data["train"], data["valid"])
        return m

    base = _cached(args.cache, "dense", dense)
    mec_cfg = MECConfig(
        num_subspaces=4, codebook_size=256, min_vocab=args.min_vocab, protocol="none",
        code_learning=CodeLearningConfig(steps=args.code_steps), device="cpu", plugin_per_field=False,
    )  # fmt: skip
    lr_cfg = LowRankConfig(rank=args.rank, **quick)
    budget_cfg = BudgetConfig(max_auc_loss=args.max_auc_loss, calib_rows=50_000, device="cpu")
    out: dict[str, nn.Module] = {"dense": base}
    out["mec M=4 K=256"] = _cached(args.cache, "mec", lambda: compress(copy.deepcopy(base), mec_cfg, data))
    out[f"budget (max AUC loss {args.max_auc_loss})"] = _cached(
        args.cache, "budget", lambda: compress(copy.deepcopy(base), budget_cfg, data)
    )
    out[f"mec + lowrank MLP r{args.rank}"] = _cached(
        args.cache, "mec_lowrank", lambda: compress(copy.deepcopy(out["mec M=4 K=256"]), lr_cfg, data)
    )
    # the default targets skip the tower's first layer (624 -> 400 here: 44% of the MLP's
    # multiply-adds); this variant factorizes every hidden layer
    every = tuple(f"mlp.layers.{i}" for i in range(0, 2 * len(args.mlp.split(",")), 2))
    lr_all = LowRankConfig(rank=args.rank, mlp_targets=every, **quick)
    out[f"mec + lowrank MLP r{args.rank} (all hidden)"] = _cached(
        args.cache, "mec_lowrank_all", lambda: compress(copy.deepcopy(out["mec M=4 K=256"]), lr_all, data)
    )
    out[f"lowrank MLP r{args.rank}"] = _cached(
        args.cache, "lowrank", lambda: compress(copy.deepcopy(base), lr_cfg, data)
    )
    for bits in (8, 4):
        cfg = RowwiseConfig(bits=bits, eval_split=None, device="cpu")
        out[f"int{bits} rows"] = _cached(
            args.cache, f"int{bits}", lambda cfg=cfg: compress(copy.deepcopy(base), cfg, data)
        )
    return out


def breakdown(model: nn.Module, batch, threads: int, repeats: int = 3) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Median ms per forward spent inside each top-level child module; ``rest`` = the model's
    own ops (interaction terms, sums)."""
    spent: dict[str, float] = {}
    starts: dict[str, float] = {}
    hooks = []
    for name, child in model.named_children():
        hooks.append(
            child.register_forward_pre_hook(lambda m, a, n=name: starts.__setitem__(n, time.perf_counter()))
        )
        hooks.append(
            child.register_forward_hook(
                lambda m, a, o, n=name: spent.__setitem__(
                    n, spent.get(n, 0.0) + time.perf_counter() - starts[n]
                )
            )
        )
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    runs: list[dict[str, float]] = []
    try:
        with torch.inference_mode():
            model(batch)
            for _ in range(repeats):
                spent.clear()
                t0 = time.perf_counter()
                model(batch)
                total = time.perf_counter() - t0
                runs.append({**spent, "rest": total - sum(spent.values()), "total": total})
    finally:
        torch.set_num_threads(prev)
        for h in hooks:
            h.remove()
    keys = runs[0].keys()
    return {k: round(1e3 * statistics.median(r[k] for r in runs), 2) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DEMO)
    ap.add_argument("--model", default="deepfm")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--mlp", default="400,400,400")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--min-vocab", type=int, default=1000)
    ap.add_argument("--code-steps", type=int, default=100)
    ap.add_argument("--max-auc-loss", type=float, default=0.001)
    ap.add_argument("--train-steps", type=int, default=None, help="cap on training steps (default 1 epoch)")
    ap.add_argument("--cache", type=Path, default=None, help="folder to keep the built models in")
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", default=None, help="result name (default inference_fused_<machine>)")
    args = ap.parse_args()
    data = EncodedDataset.open(args.data)
    models = candidates(data, args)
    for m in models.values():
        m.eval()
    batches = list(BatchLoader(data["test"], batch_size=args.batch_size))[: args.batches]
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        keys = [(k, fuse) for k in models for fuse in (True, False)]
        speeds: dict[tuple[str, bool], list[float]] = {k: [] for k in keys}
        ratios: dict[tuple[str, bool], list[float]] = {k: [] for k in keys}
        for _ in range(args.rounds):
            now = {}
            for name, fuse in keys:
                set_fuse(models[name], fuse)
                now[(name, fuse)] = time_forward(
                    models[name], batches, warmup=1, repeats=args.repeats, threads=threads, device="cpu"
                )["samples_per_s"]
            for k, v in now.items():
                speeds[k].append(v)
                ratios[k].append(v / now[("dense", True)])
        for name, fuse in keys:
            set_fuse(models[name], fuse)
            sr = size_report(models[name])["total"]
            results.append({
                "model": f"{args.model} {name}", "fused": fuse, "threads": threads,
                "params_M": sr["params"] / 1e6, "MB": sr["mb"],
                "samples_per_s": statistics.median(speeds[(name, fuse)]),
                "x_dense_fused": statistics.median(ratios[(name, fuse)]),
                "x_dense_per_field": statistics.median(
                    a / b for a, b in zip(speeds[(name, fuse)], speeds[("dense", False)], strict=True)
                ),
                "ms_per_batch_parts": breakdown(models[name], batches[0], threads),
            })  # fmt: skip
        print(f"\nthreads={threads}, batch {args.batch_size} (shared machine: compare ratios, not samples/s)")
        cols = f"{'fused':>5s} {'MB':>7s} {'samples/s':>10s} {'x dense':>8s} {'x dense/pf':>10s}"
        print(f"{'model':44s} {cols}  parts (ms)")
        for r in results:
            if r["threads"] != threads:
                continue
            parts = ", ".join(f"{k} {v:.0f}" for k, v in r["ms_per_batch_parts"].items())
            print(
                f"{r['model']:44s} {r['fused']!s:>5s} {r['MB']:7.3f} {r['samples_per_s']:10,.0f} "
                f"{r['x_dense_fused']:8.2f} {r['x_dense_per_field']:10.2f}  {parts}"
            )
    path = write_result(
        args.out or f"inference_fused_{machine_tag()}",
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            "note": "shared 2-core machine (other jobs running): absolute samples/s are inflated "
            "by load; ratios are per round against the dense model measured in the same round. "
            "x_dense_fused: vs dense with fused lookups (the default); x_dense_per_field: vs dense "
            "with per-field lookups (the pre-fusion code path).",
            "rows": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
