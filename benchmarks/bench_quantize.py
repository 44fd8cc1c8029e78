"""AUC cost, bytes and CPU inference speed of post-training quantization, per model.

For each model and seed: train the dense model on criteo-like data (cached demo data by
default), then apply, each to a fresh copy, row-wise fp16/int8/int4/int2 tables, int8
weight-only Linear layers, and int4 rows + int8 Linear layers together. No fine-tune: the
numbers are the plug-in cost (PROTOCOL.md: every variant starts from the same trained model,
so the dense control needs no extra training). Inference is timed in interleaved rounds
(ratio to dense per round, then the median), batch 10k, fixed threads.

    python benchmarks/bench_quantize.py --models deepfm pnn dcnv2 gdcn --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from ctrzip.compression import compress
from ctrzip.compression.quantize import FP16Config, Int2Config, Int4Config, Int8Config, LinearInt8Config
from ctrzip.compression.sizes import size_report
from ctrzip.data.dataset import EncodedDataset
from ctrzip.train.trainer import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, add_model_args, open_data, run_meta, speed_ratios, train_dense  # noqa: E402

VARIANTS: dict[str, list[Any]] = {
    "fp16 rows": [FP16Config(eval_split=None)],
    "int8 rows": [Int8Config(eval_split=None)],
    "int4 rows": [Int4Config(eval_split=None)],
    "int2 rows": [Int2Config(eval_split=None)],
    "int8 linear": [LinearInt8Config(eval_split=None)],
    "int4 rows + int8 linear": [Int4Config(eval_split=None), LinearInt8Config(eval_split=None)],
}


def metrics(model: Any, data: EncodedDataset) -> dict[str, float]:
    out = {}
    for split in ("valid", "test"):
        m = evaluate(model, data[split], batch_size=20_000, device="cpu")
        out[f"{split}_auc"], out[f"{split}_logloss"] = m["auc"], m["logloss"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, ["deepfm", "pnn", "dcnv2", "gdcn"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    data = open_data(args)
    meta = run_meta(args)
    out = args.out or RESULTS / f"quantize_{meta['machine_tag']}.jsonl"
    head = ("model", "seed", "variant", "MB", "ratio", "d test AUC", "x speed")
    print("{:8s} {:>4s} {:24s} {:>8s} {:>6s} {:>10s} {:>7s}".format(*head))
    for name in args.models:
        for seed in args.seeds:
            dense, train_s = train_dense(name, data, seed, args)
            models = {"dense": dense}
            for label, configs in VARIANTS.items():
                m = copy.deepcopy(dense)
                for cfg in configs:
                    compress(m, cfg, data)
                models[label] = m.eval()
            speed = speed_ratios(models, data, args.rounds, args.threads)
            base = metrics(dense, data)
            base_bytes = size_report(dense)["total"]["bytes"]
            for label, m in models.items():
                met = metrics(m, data) if label != "dense" else base
                sizes = size_report(m)
                rec = {
                    **meta,
                    "model": name,
                    "seed": seed,
                    "variant": label,
                    "bytes": sizes["total"]["bytes"],
                    "bytes_by_component": {k: v["bytes"] for k, v in sizes["components"].items()},
                    "ratio": base_bytes / sizes["total"]["bytes"],
                    **met,
                    "delta_test_auc": met["test_auc"] - base["test_auc"],
                    "delta_valid_auc": met["valid_auc"] - base["valid_auc"],
                    "speed_vs_dense": speed[label],
                    "train_seconds": train_s,
                    "train_rows": len(data["train"].label),
                }
                with out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(
                    f"{name:8s} {seed:4d} {label:24s} {rec['bytes'] / 2**20:8.3f} {rec['ratio']:6.2f} "
                    f"{rec['delta_test_auc']:+10.4f} {rec['speed_vs_dense']:7.2f}"
                )
    print(f"appended to {out}")


if __name__ == "__main__":
    main()
