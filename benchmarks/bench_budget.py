"""Whole-model compression to a memory budget: ratio, test AUC and search time per budget.

First version (issue 10): for each model and seed, train the dense model one epoch (timed:
the search cost is reported against it), then run ``BudgetConfig(mb=total / r)`` for each
ratio ``r`` on a copy, and ``BudgetConfig(max_auc_loss=L)`` for each loss cap. Plug-in
protocol (no fine-tune), so every row is compared with the same trained model. Bytes are the
stored tensors of this data's vocabulary; they are also projected to Criteo's real
vocabulary (``criteo_ratio``) with each table's own layout (``compression.budget.projection``);
the plan itself was chosen at this scale.

    python benchmarks/bench_budget.py --models deepfm pnn --ratios 2 4 --losses 0.001
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ctrzip.compression import compress
from ctrzip.compression.budget import BudgetConfig
from ctrzip.compression.sizes import size_report
from ctrzip.errors import CompressionError
from ctrzip.train.trainer import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, add_model_args, open_data, run_meta, train_dense  # noqa: E402


def criteo_projection(dense: Any, model: Any, data: Any) -> dict[str, Any]:
    """Both models' bytes over Criteo's real vocabulary (min_count 10), when the fields match."""
    from ctrzip.compression.budget.projection import project_bytes
    from ctrzip.compression.mec.projection import FULL_SCALE_VOCAB

    vocab = FULL_SCALE_VOCAB["criteo"]
    if not all(f.name in vocab for f in data.schema.sparse_fields):
        return {}
    before, after = project_bytes(dense, vocab), project_bytes(model, vocab)
    return {"criteo_bytes_before": before, "criteo_bytes": after, "criteo_ratio": before / after}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, ["deepfm", "pnn"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[2.0, 4.0])
    ap.add_argument("--losses", nargs="+", type=float, default=[0.001])
    ap.add_argument("--calib-rows", type=int, default=100_000)
    args = ap.parse_args()
    data = open_data(args)
    meta = run_meta(args)
    out = args.out or RESULTS / f"budget_{meta['machine_tag']}.jsonl"
    head = ("model", "seed", "goal", "MB", "ratio", "d test AUC", "search/epoch", "criteo x")
    print("{:8s} {:>4s} {:>14s} {:>7s} {:>6s} {:>10s} {:>12s} {:>10s}".format(*head))
    for name in args.models:
        for seed in args.seeds:
            dense, epoch_s = train_dense(name, data, seed, args)
            epoch_s /= args.epochs
            total = size_report(dense)["total"]["bytes"]
            base = evaluate(dense, data["test"], batch_size=20_000, device="cpu")
            goals = [("mb", total / r / 2**20, f"{r:g}x budget") for r in args.ratios]
            goals += [("max_auc_loss", loss, f"loss<={loss:g}") for loss in args.losses]
            for key, value, label in goals:
                model = copy.deepcopy(dense)
                t0 = time.perf_counter()
                try:
                    compress(
                        model, BudgetConfig(**{key: value}, calib_rows=args.calib_rows, device="cpu"), data
                    )
                except CompressionError as err:
                    print(f"{name:8s} {seed:4d} {label:>14s} refused: {err}")
                    continue
                search_s = time.perf_counter() - t0
                report = model.compression_log[-1]["report"]
                test = evaluate(model, data["test"], batch_size=20_000, device="cpu")
                rec = {
                    **meta,
                    "model": name,
                    "seed": seed,
                    "goal": {key: value},
                    "bytes_before": total,
                    "bytes": report["bytes"]["after"],
                    "ratio": total / report["bytes"]["after"],
                    "test_auc": test["auc"],
                    "dense_test_auc": base["auc"],
                    "delta_test_auc": test["auc"] - base["auc"],
                    "valid": report["metrics"],
                    "search_seconds": search_s,
                    "epoch_seconds": epoch_s,
                    "plan": Counter(p["representation"].split(" ")[0] for p in report["plan"]),
                    "train_rows": len(data["train"].label),
                    **criteo_projection(dense, model, data),
                }
                with out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(
                    f"{name:8s} {seed:4d} {label:>14s} {rec['bytes'] / 2**20:7.3f} {rec['ratio']:6.2f} "
                    f"{rec['delta_test_auc']:+10.4f} {search_s / epoch_s:12.2f} "
                    f"{rec.get('criteo_ratio', float('nan')):10.1f}"
                )
    print(f"appended to {out}")


if __name__ == "__main__":
    main()
