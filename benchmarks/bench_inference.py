"""CPU/GPU inference throughput of compressed models against the dense model, interleaved.

Every candidate is timed in rounds that alternate between models (A B C A B C ...), and the
ratio to the dense model is taken per round before the median, so slow drifts in machine
load (a shared 2-core CPU) cancel. Forward only, eval mode, ``inference_mode``, fixed
threads, warm-up excluded (``ctrzip.bench.timing.time_forward``).

    python benchmarks/bench_inference.py --data DIR --model deepfm --threads 1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch

from ctrzip.bench.timing import time_forward
from ctrzip.compression import compress
from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
from ctrzip.compression.lowrank.tt import TTConfig
from ctrzip.compression.mec.method import MECConfig
from ctrzip.compression.mec.stage1 import CodeLearningConfig
from ctrzip.compression.sizes import size_report
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.loader import BatchLoader
from ctrzip.models.base import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_tag, write_result  # noqa: E402


def candidates(base, data, args):  # type: ignore[no-untyped-def]
    """Compressed variants of ``base`` (weights untrained: speed and size do not depend on them)."""
    quick = {"finetune_epochs": 0, "eval_split": None, "device": "cpu"}
    out = {"dense": base}
    out[f"lowrank MLP r{args.rank}"] = compress(
        copy.deepcopy(base), LowRankConfig(rank=args.rank, **quick), data
    )
    emb = LowRankConfig(mlp=False, embedding=True, embedding_rank=args.emb_rank, **quick)
    out[f"lowrank EMB {args.dim}->{args.emb_rank} (folded)"] = compress(copy.deepcopy(base), emb, data)
    both = compress(copy.deepcopy(out[f"lowrank MLP r{args.rank}"]), emb, data)
    out[f"lowrank MLP r{args.rank} + EMB {args.dim}->{args.emb_rank}"] = both
    out["tt EMB r16"] = compress(
        copy.deepcopy(base), TTConfig(tt_rank=16, min_vocab=args.min_vocab, **quick), data
    )
    mec = MECConfig(
        num_subspaces=4, codebook_size=16, min_vocab=args.min_vocab, protocol="none",
        code_learning=CodeLearningConfig(steps=50), device="cpu", plugin_per_field=False,
    )  # fmt: skip
    out["mec M=4 K=16"] = compress(copy.deepcopy(base), mec, data)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", default="deepfm")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--mlp", default="400,400,400")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--emb-rank", type=int, default=4)
    ap.add_argument("--min-vocab", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    data = EncodedDataset.open(args.data)
    base = build_model(
        args.model, data.schema, {"embedding_dim": args.dim, "mlp": [int(x) for x in args.mlp.split(",")]}
    )
    base.eval()
    models = candidates(base, data, args)
    batches = list(BatchLoader(data["test"], batch_size=args.batch_size))[: args.batches]
    ratios: dict[str, list[float]] = {k: [] for k in models}
    speeds: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.rounds):
        now = {
            k: time_forward(m, batches, warmup=1, repeats=3, threads=args.threads, device=args.device)[
                "samples_per_s"
            ]
            for k, m in models.items()
        }
        for k, v in now.items():
            speeds[k].append(v)
            ratios[k].append(v / now["dense"])
    rows = []
    for k, m in models.items():
        sr = size_report(m)["total"]
        rows.append({
            "model": f"{args.model} {k}", "params_M": sr["params"] / 1e6, "MB": sr["mb"],
            "samples_per_s": statistics.median(speeds[k]), "speedup_vs_dense": statistics.median(ratios[k]),
        })  # fmt: skip
    print(f"{'model':48s} {'params(M)':>10s} {'MB':>8s} {'samples/s':>11s} {'x dense':>8s}")
    for r in rows:
        line = f"{r['model']:48s} {r['params_M']:10.4f} {r['MB']:8.3f} {r['samples_per_s']:11,.0f}"
        print(f"{line} {r['speedup_vs_dense']:8.2f}")
    path = write_result(
        f"inference_{args.model}_{machine_tag()}",
        {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
