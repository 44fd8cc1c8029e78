"""Whole-model frontier: the budget method against dense, row-wise int8/int4, weighted k-means
PQ and MEC, per model and seed (issue 10, item 5).

For each model and seed the dense model is trained once (timed: the search cost is reported
against one epoch), then every variant runs on a fresh copy of it, plug-in (no fine-tune, so
the dense model of the same seed is the paired control, PROTOCOL.md 1):

* ``int8 rows`` / ``int4 rows``: row-wise quantized tables (``int4 rows + int8 linear`` too);
* ``weighted k-means`` / ``mec``: MEC's PQ (M x K, fields with at least ``--min-vocab`` ids);
* ``budget loss<=L`` (``max_auc_loss=L``) and ``budget R x`` (``mb = dense / R``), all read off
  one ``BudgetSearch`` of the model (calibrated once; each record's ``seconds`` is that shared
  calibration plus the goal's own apply-and-verify, i.e. what one ``compress`` call costs).

Each record has stored bytes (what ``ctrzip.save`` writes), valid and test AUC, the paired
deltas, the method's seconds, and the bytes of both models projected to a real vocabulary
(``--vocab criteo|avazu``, ``compression.budget.projection``: each table's own layout over the
real ids; the plan and AUC are from this data). For the first seed, CPU inference at batch
10k is timed against dense (interleaved rounds). Rows already in ``--out`` are skipped, so an
interrupted run resumes. ``summarize.py budget`` makes the table and the frontier plot.

    python benchmarks/bench_budget.py --models pnn deepfm dcnv2 gdcn --seeds 0 1 2
    python benchmarks/bench_budget.py --data AVAZU_ENC --vocab avazu --tag avazu-like --models pnn deepfm
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
from ctrzip.compression.budget import BudgetConfig, BudgetSearch
from ctrzip.compression.budget.projection import project_bytes
from ctrzip.compression.mec.method import MECConfig
from ctrzip.compression.mec.projection import FULL_SCALE_VOCAB
from ctrzip.compression.quantize import Int4Config, Int8Config, LinearInt8Config
from ctrzip.compression.sizes import size_report
from ctrzip.errors import CompressionError
from ctrzip.train.trainer import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, add_model_args, open_data, run_meta, speed_ratios, train_dense  # noqa: E402


def variants(args: argparse.Namespace, seed: int) -> dict[str, list[Any]]:
    """``{label: [config, ...]}`` applied in order to a copy of the dense model."""
    pq = {"num_subspaces": args.M, "codebook_size": args.K, "min_vocab": args.min_vocab, "seed": seed}
    pq |= {"protocol": "none", "plugin_per_field": False, "device": "cpu"}
    out: dict[str, list[Any]] = {
        "int8 rows": [Int8Config(eval_split=None)],
        "int4 rows": [Int4Config(eval_split=None)],
        "int4 rows + int8 linear": [Int4Config(eval_split=None), LinearInt8Config(eval_split=None)],
        "weighted k-means": [MECConfig.variant("weighted_kmeans", **pq)],
    }
    if args.mec_steps > 0:
        out["mec"] = [MECConfig.variant("mec", steps=args.mec_steps, **pq)]
    return {k: v for k, v in out.items() if not args.only or k in args.only}


def budget_goals(args: argparse.Namespace, total: int) -> dict[str, dict[str, float]]:
    """``{label: goal}`` answered by one ``BudgetSearch`` per model (calibrated once)."""
    goals = {f"budget loss<={loss:g}": {"max_auc_loss": loss} for loss in args.losses}
    goals |= {f"budget {r:g}x": {"mb": total / r / 2**20} for r in args.ratios}
    return {k: v for k, v in goals.items() if not args.only or k in args.only}


def projected(dense: Any, model: Any, vocab: dict[str, int] | None) -> dict[str, Any]:
    if vocab is None:
        return {}
    try:
        before, after = project_bytes(dense, vocab), project_bytes(model, vocab)
    except CompressionError as err:  # a table type without a projection rule: say so
        return {"projection_error": str(err)}
    return {"projected_bytes_before": before, "projected_bytes": after, "projected_ratio": before / after}


def done_cells(out: Path) -> set[tuple[str, str, int, str]]:
    if not out.exists():
        return set()
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {(r["data"], r["model"], r["seed"], r["variant"]) for r in recs}


def measure(model: Any, dense: Any, ds: Any, vocab: dict[str, int] | None, /, **rec: Any) -> dict[str, Any]:
    """One record: bytes, projected bytes, valid/test AUC and the paired deltas vs ``dense``."""
    met = {s: evaluate(model, ds[s], batch_size=20_000, device="cpu") for s in ("valid", "test")}
    base = {s: evaluate(dense, ds[s], batch_size=20_000, device="cpu") for s in ("valid", "test")}
    total, after = size_report(dense)["total"]["bytes"], size_report(model)["total"]["bytes"]
    return {
        **rec,
        "bytes_before": total,
        "bytes": after,
        "ratio": total / after,
        **projected(dense, model, vocab),
        "valid_auc": met["valid"]["auc"],
        "test_auc": met["test"]["auc"],
        "test_logloss": met["test"]["logloss"],
        "dense_valid_auc": base["valid"]["auc"],
        "dense_test_auc": base["test"]["auc"],
        "delta_valid_auc": met["valid"]["auc"] - base["valid"]["auc"],
        "delta_test_auc": met["test"]["auc"] - base["test"]["auc"],
        "train_rows": len(ds["train"].label),
    }


def plan_summary(report: dict[str, Any]) -> dict[str, Any]:
    plan = report.get("plan", [])
    return {
        "plan": Counter(p["representation"] for p in plan),
        "network": next((p["representation"] for p in plan if p["target"] == "network"), None),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, ["pnn", "deepfm", "dcnv2", "gdcn"])
    ap.add_argument("--tag", default="criteo-like", help="data label stored in each record")
    ap.add_argument("--vocab", default="criteo", choices=[*FULL_SCALE_VOCAB, "none"])
    ap.add_argument("--ratios", nargs="*", type=float, default=[6.0, 12.0, 24.0])
    ap.add_argument("--losses", nargs="*", type=float, default=[0.001, 0.002])
    ap.add_argument("--calib-rows", type=int, default=50_000)
    ap.add_argument("--M", type=int, default=4)
    ap.add_argument("--K", type=int, default=256)
    ap.add_argument("--min-vocab", type=int, default=1000)
    ap.add_argument("--mec-steps", type=int, default=300, help="MEC stage-1 steps per field (0: no MEC)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these variant labels")
    ap.add_argument("--rounds", type=int, default=3, help="inference timing rounds (first seed)")
    args = ap.parse_args()
    data = open_data(args)
    meta = run_meta(args)
    out = args.out or RESULTS / f"budget_frontier_{meta['machine_tag']}.jsonl"
    vocab = None if args.vocab == "none" else FULL_SCALE_VOCAB[args.vocab]
    if vocab is not None and not all(f.name in vocab for f in data.schema.sparse_fields):
        ap.error(f"--vocab {args.vocab}: the data's fields are not {args.vocab}'s")
    done = done_cells(out)
    head = ("model", "seed", "variant", "MB", "ratio", "proj", "d test", "s")
    print("{:7s} {:>4s} {:26s} {:>7s} {:>6s} {:>6s} {:>8s} {:>6s}".format(*head))

    def emit(rec: dict[str, Any]) -> None:
        with out.open("a") as f:
            f.write(json.dumps({**meta, **rec}) + "\n")
        print(
            f"{rec['model']:7s} {rec['seed']:4d} {rec['variant']:26s} {rec['bytes'] / 2**20:7.3f} "
            f"{rec['ratio']:6.2f} {rec.get('projected_ratio', float('nan')):6.1f} "
            f"{rec['delta_test_auc']:+8.4f} {rec['seconds']:6.1f}"
        )

    for name in args.models:
        for seed in args.seeds:
            key = {"data": args.tag, "model": name, "seed": seed}
            todo = lambda label, k=(args.tag, name, seed): (*k, label) not in done  # noqa: E731
            labels = ["dense", *variants(args, seed), *budget_goals(args, 1)]
            if not any(todo(v) for v in labels):
                continue
            dense, train_s = train_dense(name, data, seed, args)
            timing = {"epoch_seconds": train_s / args.epochs}
            models: dict[str, Any] = {"dense": dense}
            if todo("dense"):
                emit(measure(dense, dense, data, vocab, **key, variant="dense", seconds=0.0, **timing))
            for label, configs in variants(args, seed).items():
                if not todo(label):
                    continue
                model, t0 = copy.deepcopy(dense), time.perf_counter()
                try:
                    for cfg in configs:
                        compress(model, cfg, data)
                except CompressionError as err:
                    print(f"{name:7s} {seed:4d} {label:26s} refused: {err}")
                    continue
                seconds = time.perf_counter() - t0
                models[label] = model.eval()
                plan = plan_summary(model.compression_log[-1]["report"])
                emit(
                    measure(
                        model,
                        dense,
                        data,
                        vocab,
                        **key,
                        variant=label,
                        seconds=seconds,
                        **timing,
                        **plan,
                    )
                )
            goals = {
                k: g for k, g in budget_goals(args, size_report(dense)["total"]["bytes"]).items() if todo(k)
            }
            if goals:  # one search, calibrated once, answers every goal (BudgetSearch)
                t0 = time.perf_counter()
                cfg = BudgetConfig(mb=1.0, calib_rows=args.calib_rows, device="cpu", seed=seed)
                search = BudgetSearch(copy.deepcopy(dense), data, cfg)
                search.calibrate()
                shared_s = time.perf_counter() - t0
                for label, goal in goals.items():
                    t1 = time.perf_counter()
                    try:
                        report = search.apply(**goal)
                    except CompressionError as err:
                        print(f"{name:7s} {seed:4d} {label:26s} refused: {err}")
                        continue
                    apply_s = time.perf_counter() - t1
                    models[label] = copy.deepcopy(search.model).eval()
                    extra = {
                        "calibration_seconds": shared_s,
                        "apply_seconds": apply_s,
                        **plan_summary(report),
                    }
                    rec = measure(search.model, dense, data, vocab, **key, variant=label, **timing, **extra)
                    emit({**rec, "seconds": shared_s + apply_s, "goal": goal})
                    search.restore()
            if seed == args.seeds[0] and args.rounds > 0 and len(models) > 1:
                speed = speed_ratios(models, data, args.rounds, threads=1)
                with out.open("a") as f:
                    rec = {**key, "variant": "_speed", "speed_vs_dense_batch10k": speed}
                    f.write(json.dumps({**meta, **rec}) + "\n")
                print(
                    "speed vs dense (batch 10k, 1 thread): "
                    + ", ".join(f"{k} {v:.2f}" for k, v in speed.items())
                )
    print(f"appended to {out}")


if __name__ == "__main__":
    main()
