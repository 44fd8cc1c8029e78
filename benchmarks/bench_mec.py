"""MEC benchmark in the structure of Yu et al., DASFAA 2025, Tables 2 and 4 (spec/PROTOCOL.md).

Per seed: train the dense base model; fine-tune a copy of it with the same protocol as the
compressed models (the same-protocol control, PROTOCOL.md 1); then, from a fresh copy of the
base, every ``--variants`` x ``--M`` x ``--K`` cell: stage 1 (plug-in AUC, no retraining),
the stage-2 protocol (``finetune`` or ``retrain``), bytes (codes as stored and bit-packed,
codebooks, dense parts) and the ratio to the dense model of the same architecture. Valid
AUC is what variants are compared on; test AUC is read once per final model. One JSON line
per cell goes to ``benchmarks/results/mec_<machine>.jsonl``; a mean +- sd table is printed.

Smoke run (synthetic Criteo-like data, 1 thread, a few minutes)::

    python benchmarks/bench_mec.py --smoke

Larger: ``--synthetic-rows 2000000 --K 64,256 --M 2,4 --seeds 0,1,2`` or ``--data DIR`` (an
encoded dataset from ``ctrzip encode``). ``--protocol none`` reports plug-in AUC only (the
control is the base model); ``--full-scale criteo|criteo_raw|avazu`` adds each cell's bytes
projected to that real vocabulary; ``--time-budget`` stops starting new cells (records are
appended as they finish). ``benchmarks/summarize.py mec FILE`` makes the tables and the plot.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ctrzip.compression import compress
from ctrzip.compression.mec.method import VARIANTS, MECConfig
from ctrzip.compression.mec.projection import FULL_SCALE_VOCAB, project_mec_bytes
from ctrzip.compression.mec.stage2 import StageTwoConfig, finetune
from ctrzip.compression.sizes import byte_breakdown
from ctrzip.data.dataset import EncodedDataset
from ctrzip.models.base import CTRModel, build_model
from ctrzip.train import TrainConfig, Trainer, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_tag, run_meta  # noqa: E402
from summarize import mec_table  # noqa: E402


def synthetic_dataset(kind: str, rows: int, seed: int, min_count: int, workers: int) -> EncodedDataset:
    """Generate Criteo- or Avazu-like raw rows with the teacher (SYNTH.md) and encode them (cached)."""
    from ctrzip.data.encode import encode_dataset
    from ctrzip.data.synth.driver import generate

    root = Path(tempfile.gettempdir()) / "ctrzip_bench_mec" / f"{kind}_{rows}_{seed}_{min_count}"
    enc = root / "encoded"
    if not (enc / "feature_map.json").exists():
        generate(f"{kind}-like", root / "raw.txt", rows, seed=seed, workers=workers, progress=False)
        encode_dataset(kind, root / "raw.txt", enc, progress=False, overrides=[f"min_count={min_count}"])
    return EncodedDataset.open(enc)


def projection(
    model: CTRModel, dense: dict[str, Any], kind: str | None, m: int, k: int, min_vocab: int, layout: str
) -> dict[str, Any] | None:
    """Dense and MEC bytes of this architecture over the full-scale vocabulary of ``kind``."""
    if kind is None:
        return None
    vocab = FULL_SCALE_VOCAB[kind]
    fields = model.embedding.tables
    missing = [f for f in fields if f not in vocab]
    if missing:
        raise SystemExit(f"--full-scale {kind}: no full-scale vocabulary for fields {missing}")
    first_order = dense["first_order"] > 0
    dim = next(iter(fields.values())).embedding_dim
    per_row = dim * 4 + (4 if first_order else 0)
    network = dense["total"] - sum(t.num_embeddings * per_row for t in fields.values())
    proj = project_mec_bytes(
        {f: vocab[f] for f in fields},
        dim=dim,
        num_subspaces=m,
        codebook_size=k,
        min_vocab=min_vocab,
        network_bytes=network,
        first_order=first_order,
        layout=layout,
    )
    return {key: round(v, 3) if isinstance(v, float) else v for key, v in proj.items()}


def _m(x: dict[str, float]) -> dict[str, float]:
    return {"auc": round(x["auc"], 5), "logloss": round(x["logloss"], 5)}


class Bench:
    """Runs every cell for one seed and collects JSON records."""

    def __init__(self, args: argparse.Namespace, data: EncodedDataset, out: Path) -> None:
        self.args, self.data, self.out = args, data, out
        self.records: list[dict[str, Any]] = []
        self.t_start = time.perf_counter()
        self.train_seconds: dict[int, float] = {}
        self.meta = {
            **run_meta(args),
            "threads": args.threads,
            "model": args.model,
            "embedding_dim": args.dim,
            "protocol": args.protocol,
            "min_vocab": args.min_vocab,
        }

    def stage_two(self) -> StageTwoConfig:
        a = self.args
        if a.protocol == "finetune":
            return StageTwoConfig(
                epochs=1,
                lr=a.ft_lr,
                batch_size=a.batch_size,
                max_steps=a.ft_max_steps,
                freeze_codebooks=a.freeze_codebooks,
            )
        return StageTwoConfig(epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, early_stop_patience=2)

    def base_model(self, seed: int) -> CTRModel:
        a = self.args
        torch.manual_seed(seed)
        model = build_model(a.model, self.data.schema, {"embedding_dim": a.dim, **json.loads(a.model_params)})
        cfg = TrainConfig(
            epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=seed, progress=False, device=a.device
        )
        t0 = time.perf_counter()
        Trainer(cfg).fit(model, self.data["train"], self.data["valid"])
        self.train_seconds[seed] = round(time.perf_counter() - t0, 2)
        return model

    def out_of_time(self) -> bool:
        """True once ``--time-budget`` seconds have passed (no new cell is started)."""
        budget = self.args.time_budget
        return budget is not None and time.perf_counter() - self.t_start > budget

    def run(self, seed: int) -> None:
        a, data = self.args, self.data
        base = self.base_model(seed)
        dense_bytes = byte_breakdown(base)
        base_valid = evaluate(base, data["valid"], device=a.device)
        control = copy.deepcopy(base)
        if a.protocol == "finetune":  # same extra training as the compressed models
            finetune(control, data, self.stage_two(), seed, a.device)
        elif a.protocol == "retrain":  # retrain a dense model from scratch with the same recipe
            control = self.base_model(seed + 1000)
        self.add(
            seed,
            "dense",
            None,
            None,
            base_valid,
            evaluate(control, data["valid"], device=a.device),
            evaluate(control, data["test"], device=a.device),
            dense_bytes,
            dense_bytes,
            {"train_seconds": self.train_seconds[seed]},
        )
        for m in a.M:
            for k in a.K:
                for variant in a.variants:
                    if self.out_of_time():
                        print(f"time budget of {a.time_budget}s spent: stopping before {variant} M={m} K={k}")
                        return
                    self.cell(base, seed, variant, m, k, dense_bytes)

    def cell(
        self, base: CTRModel, seed: int, variant: str, m: int, k: int, dense_bytes: dict[str, Any]
    ) -> None:
        a = self.args
        model = copy.deepcopy(base)
        cfg = MECConfig.variant(
            variant,
            num_subspaces=m,
            codebook_size=k,
            min_vocab=a.min_vocab,
            protocol=a.protocol,
            finetune=self.stage_two(),
            retrain=self.stage_two(),
            plugin_per_field=False,
            seed=seed,
            device=a.device,
            batch_size=a.stage1_batch,
            # the k-means baselines pin steps=0: a step budget would make them learned variants
            **({} if "steps" in VARIANTS[variant] else {"steps": a.steps}),
        )
        t0 = time.perf_counter()
        compress(model, cfg, self.data)
        rep = model.compression_log[-1]["report"]
        fields = rep["fields"]
        vocab = [self.data.schema[f].vocab_size for f in fields]
        extra = {
            "seconds": round(time.perf_counter() - t0, 2),
            "base_train_seconds": self.train_seconds.get(seed),
            "ids_per_codeword": round(max(vocab) / k, 1) if vocab else None,
            "full_scale": projection(
                base, dense_bytes, a.full_scale, m, k, a.min_vocab, cfg.code_learning.layout
            ),
            "fields": sorted(fields),
            "stage1_seconds": round(sum(f["stage1"]["seconds"] for f in fields.values()), 2),
            "relative_error": statistics.fmean(f["relative_error"] for f in fields.values())
            if fields
            else None,
            "diagnostics": {
                key: round(statistics.fmean(f["diagnostics"].get(key, 0.0) for f in fields.values()), 4)
                for key in (
                    "all_usage",
                    "all_perplexity",
                    "all_collision",
                    "head_collision",
                    "tail_collision",
                )
            }
            if fields
            else {},
        }
        test = evaluate(model, self.data["test"], device=a.device)
        self.add(seed, variant, m, k, rep["plugin"], rep["final"], test, rep["sizes"], dense_bytes, extra)

    def add(
        self,
        seed: int,
        row: str,
        m: int | None,
        k: int | None,
        plugin: dict[str, float],
        final: dict[str, float],
        test: dict[str, float],
        sizes: dict[str, Any],
        dense: dict[str, Any],
        extra: dict[str, Any],
    ) -> None:
        rec = {
            "seed": seed,
            "row": row,
            "M": m,
            "K": k,
            "plugin_valid": _m(plugin),
            "final_valid": _m(final),
            "final_test": _m(test),
            "bytes": sizes,
            "ratio": dense["total"] / sizes["total"],
            "ratio_packed_projection": dense["total"] / sizes["total_packed_projection"],
            **extra,
            **self.meta,
        }
        self.records.append(rec)
        with self.out.open("a") as fh:  # streamed, so a run cut short keeps what it finished
            fh.write(json.dumps(rec) + "\n")
        print(
            f"s{seed} {row:16s} M={m!s:4s} K={k!s:5s} ratio {rec['ratio']:6.2f}x  "
            f"plug-in {plugin['auc']:.4f}  {self.args.protocol} {final['auc']:.4f}  test {test['auc']:.4f}",
            flush=True,
        )


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="encoded dataset folder (default: synthetic Criteo-like)")
    p.add_argument("--synthetic-kind", choices=("criteo", "avazu"), default="criteo")
    p.add_argument("--synthetic-rows", type=int, default=500_000)
    p.add_argument("--workers", type=int, default=1, help="processes for the synthetic generator")
    p.add_argument(
        "--full-scale",
        choices=("criteo", "criteo_raw", "avazu", "none"),
        default=None,
        help="project bytes to this real vocabulary (default: the synthetic kind; none with --data)",
    )
    p.add_argument("--time-budget", type=float, default=None, help="seconds; no new cell starts after it")
    p.add_argument("--min-count", type=int, default=2, help="vocabulary threshold of the synthetic encode")
    p.add_argument("--model", default="deepfm")
    p.add_argument("--model-params", default="{}", help="JSON, e.g. '{\"mlp\": [400, 400, 400]}'")
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    p.add_argument("--M", type=_ints, default=[2, 4])
    p.add_argument("--K", type=_ints, default=[64, 256])
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--min-vocab", type=int, default=1000)
    p.add_argument("--steps", type=int, default=2000, help="stage-1 optimizer steps per field")
    p.add_argument("--stage1-batch", type=int, default=4096)
    p.add_argument(
        "--protocol",
        choices=("finetune", "retrain", "none"),
        default="finetune",
        help="stage 2; none = plug-in only (the control is the base model itself)",
    )
    p.add_argument("--epochs", type=int, default=2, help="base training (and retrain) epochs")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ft-lr", type=float, default=1e-4)
    p.add_argument("--ft-max-steps", type=int, default=None)
    p.add_argument("--freeze-codebooks", action="store_true", help="finetune: keep PQ tables' floats fixed")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="tiny synthetic run (minutes on 1 CPU thread)")
    args = p.parse_args(argv)
    if args.smoke:
        args.synthetic_rows, args.seeds, args.M, args.K, args.steps = 60_000, [0], [2], [16], 60
        args.variants = "mec,weighted_kmeans,kmeans"
        args.min_vocab, args.stage1_batch, args.batch_size, args.model_params = (
            500,
            1024,
            1024,
            '{"mlp": [64, 64]}',
        )
        args.ft_max_steps = 40
    if args.full_scale is None:
        args.full_scale = None if args.data else args.synthetic_kind
    elif args.full_scale == "none":
        args.full_scale = None
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown} (known: {', '.join(VARIANTS)})")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    data = (
        EncodedDataset.open(args.data)
        if args.data
        else synthetic_dataset(args.synthetic_kind, args.synthetic_rows, 0, args.min_count, args.workers)
    )
    out = args.out or Path(__file__).parent / "results" / (
        f"mec_{machine_tag()}{'_smoke' if args.smoke else ''}.jsonl"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, data, out)
    for seed in args.seeds:
        if bench.out_of_time():
            break
        bench.run(seed)
    print(mec_table(bench.records, [args.full_scale] if args.full_scale else [])[0])
    print(f"appended {len(bench.records)} records to {out}")


if __name__ == "__main__":
    main()
