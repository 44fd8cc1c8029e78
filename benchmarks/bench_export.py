"""onnxruntime vs PyTorch CPU throughput of exported models (dense, MEC, budget), interleaved.

A DeepFM is trained for one epoch on a subset of the demo data (the cached criteo-like 400k
rows), then compressed twice: MEC (PQ codes for the large fields, no fine-tune) and the memory
budget (``BudgetConfig(mb=dense / 4)``: row-wise / PQ tables, int8 network). Each model is
exported to ONNX with ``ctrzip.export.export_model`` (parity-checked) and timed at batch 1, 256
and 10,000 rows of the test split: in every round each (model, runtime) pair runs in turn
(A B C ... A B C), so drifts in machine load hit all of them alike; the ratio onnxruntime /
PyTorch is taken per round before the median. Both runtimes use the same number of threads
(``--threads``); the PyTorch side is the model itself (``predict``, ``inference_mode``), with
its own CPU kernels (e.g. the quantized row-wise lookup operators).

    python benchmarks/bench_export.py --threads 1     # ~2-3 minutes on 2 shared cores
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctrzip.compression import compress
from ctrzip.compression.budget import BudgetConfig
from ctrzip.compression.mec.method import MECConfig
from ctrzip.compression.mec.stage1 import CodeLearningConfig
from ctrzip.compression.sizes import stored_bytes
from ctrzip.data.batch import Batch
from ctrzip.data.dataset import EncodedDataset, SplitArrays
from ctrzip.export.exporter import export_model
from ctrzip.export.onnx import OnnxRunner
from ctrzip.train.trainer import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_model_args, machine_tag, open_data, write_result  # noqa: E402

BATCHES = (1, 256, 10_000)


def _head(arrays: SplitArrays, n: int) -> SplitArrays:
    return SplitArrays(
        np.asarray(arrays.sparse[:n]), np.asarray(arrays.dense[:n]), np.asarray(arrays.label[:n])
    )


def subset(data: EncodedDataset, train_rows: int, eval_rows: int) -> EncodedDataset:
    """The first rows of each split (the counts stay those of the full training split)."""
    splits = {
        name: _head(arr, train_rows if name == "train" else eval_rows) for name, arr in data.splits.items()
    }
    return EncodedDataset(root=data.root, schema=data.schema, counts=data.counts, splits=splits)


def build_models(data: EncodedDataset, args: argparse.Namespace) -> dict[str, Any]:
    from ctrzip.models.base import build_model
    from ctrzip.train.trainer import TrainConfig, Trainer

    params = {"embedding_dim": args.dim, "mlp": [int(x) for x in args.mlp.split(",")]}
    dense = build_model("deepfm", data.schema, params, seed=0)
    # batch 1024 at lr 2e-3: enough steps on a subset to learn (throughput does not depend on it)
    cfg = TrainConfig(epochs=args.epochs, lr=2e-3, batch_size=1024, seed=0, device="cpu", progress=False)
    t0 = time.perf_counter()
    Trainer(cfg).fit(dense, data["train"], data["valid"])
    dense.eval()
    print(f"trained DeepFM on {len(data['train']):,} rows in {time.perf_counter() - t0:.1f} s")
    largest = max(f.vocab_size for f in data.schema.sparse_fields)
    mec_cfg = MECConfig(
        num_subspaces=4, codebook_size=64, min_vocab=min(1_000, largest // 2), protocol="none",
        plugin_per_field=False, code_learning=CodeLearningConfig(steps=30), device="cpu",
    )  # fmt: skip
    t0 = time.perf_counter()
    mec = compress(copy.deepcopy(dense), mec_cfg, data)
    budget_mb = stored_bytes(dense) / 2**20 / 4
    t1 = time.perf_counter()
    budget = compress(copy.deepcopy(dense), BudgetConfig(mb=budget_mb, calib_rows=20_000, device="cpu"), data)
    print(f"compressed: mec in {t1 - t0:.1f} s, budget in {time.perf_counter() - t1:.1f} s")
    return {"dense": dense, "mec M=4 K=64": mec, f"budget {budget_mb:.2f} MB": budget}


def _rate(fn: Any, rows: int, min_s: float) -> float:
    """Samples per second of ``fn()`` (called until ``min_s`` has passed, at least 3 times)."""
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if calls >= 3 and elapsed >= min_s:
            return calls * rows / elapsed


def measure(
    models: dict[str, Any], runners: dict[str, OnnxRunner], test: SplitArrays, args: Any
) -> list[dict]:
    rows_out = []
    for bs in BATCHES:
        sparse = np.array(test.sparse[:bs], dtype=np.int64)  # a writable copy (the split is memory-mapped)
        dense = np.array(test.dense[:bs], dtype=np.float32)
        batch = Batch(torch.from_numpy(sparse), torch.from_numpy(dense), torch.zeros(bs))
        fns = {}
        for name, model in models.items():
            fns[name, "torch"] = lambda m=model, b=batch: m.predict(b)
            fns[name, "onnxruntime"] = lambda r=runners[name], s=sparse, d=dense: r.numpy(s, d)
        with torch.inference_mode():
            for fn in fns.values():  # warm-up (first-call allocations, ORT's lazy init)
                fn()
            rates: dict[tuple[str, str], list[float]] = {k: [] for k in fns}
            for _ in range(args.rounds):
                for key, fn in fns.items():
                    rates[key].append(_rate(fn, bs, args.min_s))
        for name in models:
            t, o = rates[name, "torch"], rates[name, "onnxruntime"]
            ratios = [a / b for a, b in zip(o, t, strict=True)]
            rows_out.append(
                {
                    "model": name,
                    "batch": bs,
                    "torch_samples_per_s": statistics.median(t),
                    "onnxruntime_samples_per_s": statistics.median(o),
                    "ort_over_torch": statistics.median(ratios),
                    "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                }
            )
    return rows_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    add_model_args(ap, ["deepfm"])
    ap.add_argument("--train-rows", type=int, default=50_000)
    ap.add_argument("--eval-rows", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=1, help="threads of both runtimes")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-s", type=float, default=0.15, help="seconds per timed (model, runtime) slot")
    args = ap.parse_args()
    t_start = time.perf_counter()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    data = subset(open_data(args), args.train_rows, args.eval_rows)
    models = build_models(data, args)
    test = data["test"]
    info, runners = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            t0 = time.perf_counter()
            rec = export_model(model, Path(tmp) / f"{len(runners)}.onnx", "onnx", data=args.data, rows=256)
            runners[name] = OnnxRunner(Path(tmp) / f"{len(runners)}.onnx", threads=args.threads)
            info[name] = {
                "stored_bytes": stored_bytes(model),
                "onnx_bytes": rec["file_bytes"],
                "export_s": round(time.perf_counter() - t0, 2),
                "parity_max_abs_diff": max(c["max_abs_diff"] for c in rec["parity"]),
                "plain_forms": len(rec["plain_forms"]),
                "test_auc": evaluate(model, test, device="cpu")["auc"],
            }
        print("exported: " + ", ".join(f"{k} in {v['export_s']} s" for k, v in info.items()))
        t0 = time.perf_counter()
        results = measure(models, runners, test, args)
        print(f"timed in {time.perf_counter() - t0:.0f} s")
    print(f"\nthreads={args.threads}, {args.rounds} interleaved rounds, median samples/s ({machine_tag()})")
    print(
        f"{'model':<22}{'bytes':>11}{'onnx B':>11}{'batch':>7}{'torch/s':>12}{'ort/s':>12}{'ort/torch':>10}"
    )
    for r in results:
        i = info[r["model"]]
        print(
            f"{r['model']:<22}{i['stored_bytes']:>11,}{i['onnx_bytes']:>11,}{r['batch']:>7}"
            f"{r['torch_samples_per_s']:>12,.0f}{r['onnxruntime_samples_per_s']:>12,.0f}"
            f"{r['ort_over_torch']:>9.2f}x"
        )
    total_s = time.perf_counter() - t_start
    path = write_result(
        f"export_{machine_tag()}",
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            "note": "interleaved rounds; ratio = onnxruntime / PyTorch samples/s per round, median; "
            "the 2 cores were shared with other jobs",
            "models": info,
            "results": results,
            "seconds": round(total_s, 1),
        },
    )
    print(f"wrote {path} in {total_s:.0f} s")


if __name__ == "__main__":
    main()
