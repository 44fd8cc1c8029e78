"""CPU training throughput of DeepFM (D=16, MLP 400x3, batch 4096) on random Criteo-shaped data.

Usage: python benchmarks/train_throughput.py [--rows 200000] [--threads 1 2]
Prints one JSON line per thread count (samples/s over one epoch, first-step warm-up excluded
by measuring the trainer's own samples/s of the second epoch).
"""

from __future__ import annotations

import argparse
import json
import platform

import numpy as np
import torch

from ctrzip.data.dataset import SplitArrays
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.models.base import build_model
from ctrzip.train import TrainConfig, Trainer


def criteo_like(rows: int, fields: int, total_vocab: int, seed: int = 0) -> tuple[FeatureSchema, SplitArrays]:
    """Random ids with skewed per-field vocab sizes summing to ~``total_vocab``."""
    rng = np.random.default_rng(seed)
    share = rng.pareto(1.0, fields) + 0.01
    vocab = np.maximum(4, (share / share.sum() * total_vocab).astype(int))
    schema = FeatureSchema(
        fields=tuple(FieldSpec(f"C{i}", "categorical", vocab_size=int(v)) for i, v in enumerate(vocab))
    )
    sparse = np.stack([rng.integers(1, v, rows) for v in vocab], 1).astype(np.int32)
    label = (rng.random(rows) < 0.25).astype(np.float32)
    return schema, SplitArrays(sparse, np.zeros((rows, 0), np.float32), label)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--fields", type=int, default=39)
    ap.add_argument("--vocab", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    schema, train = criteo_like(args.rows, args.fields, args.vocab)
    for threads in args.threads:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = build_model("deepfm", schema, {"embedding_dim": 16, "mlp": [400, 400, 400]})
        cfg = TrainConfig(epochs=2, batch_size=4096, progress=False, device="cpu")
        hist = Trainer(cfg).fit(model, train)
        print(
            json.dumps(
                {
                    "bench": "train_throughput",
                    "model": "deepfm(D=16, mlp=400x3)",
                    "rows": args.rows,
                    "fields": args.fields,
                    "total_vocab": sum(f.vocab_size for f in schema.fields),
                    "batch_size": 4096,
                    "threads": threads,
                    "samples_per_s_epoch1": round(hist.epochs[0]["samples_per_s"]),
                    "samples_per_s_epoch2": round(hist.epochs[1]["samples_per_s"]),
                    "machine": platform.processor() or platform.machine(),
                    "torch": torch.__version__,
                }
            )
        )


if __name__ == "__main__":
    main()
