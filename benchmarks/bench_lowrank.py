"""Feature-mimicking (``lowrank``) benchmark in the structure of Yu et al., KDD 2024, Tables 2/4/6/7/8.

Per model and seed: train the dense base; fine-tune a copy of it the same way as the
compressed models (the same-protocol control, PROTOCOL.md 1); then, each from a fresh copy of
the base:
  * ``lowrank MLP`` at each ``--mlp-ranks`` rank, without and with the inner ReLU (Tables 6/7);
  * ``lowrank EMB`` at each ``--emb-ranks`` rank, compressed directly (Table 8);
  * the full pipeline ``MLP -> FT -> EMB -> FT`` at ``--pipeline-emb-rank`` (Tables 2/4);
  * baselines ``svd MLP``, ``svd EMB`` and ``tt EMB`` (Table 4).
Each row: parameters (M, all elements, as the paper counts), bytes, AUC/logloss direct and
fine-tuned on ``--eval-split``, and CPU inference throughput at ``--throughput-batch`` rows
(eval, inference_mode, fixed threads, warm-up excluded, median). One JSON line per row goes to
``benchmarks/results/lowrank_<machine>.jsonl``.

Smoke run (synthetic data, 1 thread, a few minutes)::

    python benchmarks/bench_lowrank.py --smoke

Full-size settings (emb 16, MLP 400x3, rank 64, emb ranks 2/4/8) are the defaults; pass
``--data DIR`` with an encoded dataset (``ctrzip encode``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctrzip.compression import compress
from ctrzip.compression.lowrank.factorized import StepOptions, count_params, finetune_control
from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
from ctrzip.compression.lowrank.svd import SVDConfig
from ctrzip.compression.lowrank.tt import TTConfig
from ctrzip.compression.sizes import size_report
from ctrzip.data.dataset import EncodedDataset, SplitArrays, save_counts, save_split
from ctrzip.data.loader import BatchLoader
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel, build_model
from ctrzip.train import TrainConfig, Trainer, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_tag, run_meta  # noqa: E402

MODELS = "deepfm,dcn,dcnv2,nfm,autoint,fibinet,gdcn"


def synthetic_dataset(root: Path, n_train: int, seed: int = 0) -> EncodedDataset:
    """A small encoded dataset with Zipf ids and an FM + MLP teacher (stand-in when no --data)."""
    rng = np.random.default_rng(seed)
    vocabs = [2000, 1000, 500, 200, 100, 50, 20, 8]
    schema = FeatureSchema(
        fields=tuple(FieldSpec(f"C{i}", "categorical", vocab_size=v) for i, v in enumerate(vocabs))
        + (FieldSpec("I0", "dense", source="numeric"), FieldSpec("I1", "dense", source="numeric"))
    )
    latent = [rng.standard_normal((v, 4)) * 0.7 for v in vocabs]
    bias = [rng.standard_normal(v) * 0.5 for v in vocabs]
    w_mlp = rng.standard_normal((4 * len(vocabs), 16)) / np.sqrt(4 * len(vocabs))

    def split(n: int) -> SplitArrays:
        ids = np.stack([np.minimum(rng.zipf(1.3, n), v - 1) for v in vocabs], 1)
        e = np.stack([latent[f][ids[:, f]] for f in range(len(vocabs))], 1)  # [n, F, 4]
        fm = 0.5 * ((e.sum(1) ** 2) - (e**2).sum(1)).sum(1)
        deep = np.tanh(e.reshape(n, -1) @ w_mlp).sum(1)
        dense = rng.standard_normal((n, 2)).astype(np.float32)
        logit = 0.3 * fm + deep + sum(bias[f][ids[:, f]] for f in range(len(vocabs))) + 0.5 * dense[:, 0] - 1
        label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
        return SplitArrays(ids.astype(np.int32), dense, label)

    root.mkdir(parents=True, exist_ok=True)
    schema.save(root / "feature_map.json")
    train = split(n_train)
    for name, arrays in (("train", train), ("valid", split(n_train // 4)), ("test", split(n_train // 4))):
        save_split(root, name, arrays)
    save_counts(
        root / "counts.npz",
        {f"C{i}": np.bincount(train.sparse[:, i], minlength=v) for i, v in enumerate(vocabs)},
    )
    return EncodedDataset.open(root)


def _metrics(m: dict[str, float] | None) -> dict[str, float] | None:
    return None if m is None else {"auc": round(m["auc"], 5), "logloss": round(m["logloss"], 5)}


class Bench:
    """Runs the rows for one (model, seed) and collects JSON records."""

    def __init__(self, args: argparse.Namespace, data: EncodedDataset, out: Path) -> None:
        self.args, self.data, self.out = args, data, out
        self.records: list[dict[str, Any]] = []
        split = data[args.eval_split]
        rows = min(len(split), args.throughput_batch * args.timing_batches)
        loader = BatchLoader(
            SplitArrays(split.sparse[:rows], split.dense[:rows], split.label[:rows]), args.throughput_batch
        )
        self.timing_batches = list(loader)
        self.meta = {
            **run_meta(args),
            "threads": args.threads,
            "eval_split": args.eval_split,
        }

    def throughput(self, model: CTRModel) -> float:
        from ctrzip.bench.timing import time_forward

        res = time_forward(
            model,
            self.timing_batches,
            warmup=2,
            repeats=self.args.repeats,
            threads=self.args.threads,
            device="cpu",
        )
        return float(res["samples_per_s"])

    def record(self, model_name: str, seed: int, row: str, model: CTRModel, step: dict[str, Any]) -> None:
        rec = {
            "model": model_name,
            "seed": seed,
            "row": row,
            "params_M": count_params(model) / 1e6,
            "bytes": size_report(model)["total"]["bytes"],  # the stored size (every saved tensor)
            "direct": _metrics(step.get("direct")),
            "finetuned": _metrics(step.get("finetuned")),
            "throughput": self.throughput(model) if self.args.throughput_batch else None,
            **self.meta,
        }
        self.records.append(rec)
        with self.out.open("a") as fh:  # streamed, so a run cut short keeps what it finished
            fh.write(json.dumps(rec) + "\n")
        ft = rec["finetuned"] or {}
        print(
            f"{model_name:8s} s{seed} {row:28s} {rec['params_M']:8.4f}M  direct "
            f"{(rec['direct'] or {}).get('auc', float('nan')):.4f}  ft {ft.get('auc', float('nan')):.4f}  "
            f"{(rec['throughput'] or 0):10.0f}/s",
            flush=True,
        )

    def common(self, lr: float) -> dict[str, Any]:
        a = self.args
        return {
            "finetune_epochs": a.ft_epochs,
            "lr": lr,
            "finetune_batch_size": a.batch_size,
            "batch_size": a.batch_size,
            "eval_split": a.eval_split,
            "device": a.device,
        }

    def run(self, name: str, seed: int) -> None:
        a, data = self.args, self.data
        torch.manual_seed(seed)
        params = {"embedding_dim": a.dim}
        if name not in ("fm", "lr"):
            params["mlp"] = list(a.mlp)
        base = build_model(name, data.schema, params)
        tc = TrainConfig(
            epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=seed, device=a.device, progress=False
        )
        hist = Trainer(tc).fit(base, data["train"], data["valid"])
        lr = a.ft_lr if a.ft_lr is not None else float(hist.epochs[-1]["lr"])
        dense = {"direct": evaluate(base, data[a.eval_split], batch_size=a.batch_size, device=a.device)}
        self.record(name, seed, "dense", base, dense)
        common = self.common(lr)
        control = finetune_control(base, StepOptions(**common), data)
        self.record(name, seed, "dense + FT (control)", base, {"direct": control.get("finetuned")})
        # the MLP+EMB pipeline fine-tunes twice: its control gets twice the epochs
        control2 = finetune_control(base, StepOptions(**{**common, "finetune_epochs": 2 * a.ft_epochs}), data)
        self.record(name, seed, "dense + 2xFT (control)", base, {"direct": control2.get("finetuned")})

        def row(label: str, cfg: Any, step: str, start: CTRModel = base) -> CTRModel | None:
            m = copy.deepcopy(start)
            try:
                compress(m, cfg, data)
            except CompressionError as err:  # nothing of this model would shrink: no row, say why
                print(f"{name:8s} s{seed} {label:28s} skipped: {err}", flush=True)
                return None
            rep = m.compression_log[-1]["report"]
            self.record(name, seed, label, m, rep[step])
            return m

        skip = set(a.skip)
        mlp_model = None  # the pipeline starts from the first rank's plain MLP row
        for rank in [] if "mlp" in skip else a.mlp_ranks:
            for relu in (False,) if "relu" in skip else (False, True):
                m = row(
                    f"lowrank MLP r{rank}{' relu' if relu else ''}",
                    LowRankConfig(rank=rank, relu_between=relu, **common),
                    "mlp",
                )
                mlp_model = mlp_model or m
        for k in [] if "emb" in skip else a.emb_ranks:
            row(
                f"lowrank EMB {a.dim}->{k}",
                LowRankConfig(mlp=False, embedding=True, embedding_rank=k, **common),
                "embedding",
            )
        if mlp_model is None:
            mlp_model = row("pipeline: MLP", LowRankConfig(rank=a.mlp_ranks[0], **common), "mlp")
        k = a.pipeline_emb_rank
        if mlp_model is not None:
            row(
                f"pipeline: MLP+EMB {a.dim}->{k}",
                LowRankConfig(mlp=False, embedding=True, embedding_rank=k, **common),
                "embedding",
                mlp_model,
            )
        if "baselines" in skip:
            return
        row(f"svd MLP r{a.mlp_ranks[0]}", SVDConfig(rank=a.mlp_ranks[0], **common), "mlp")
        row(
            f"svd EMB {a.dim}->{k}",
            SVDConfig(mlp=False, embedding=True, embedding_rank=k, **common),
            "embedding",
        )
        row("tt EMB r16", TTConfig(tt_rank=16, min_vocab=a.tt_min_vocab, **common), "embedding")


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, help="encoded dataset folder (default: synthetic)")
    p.add_argument("--synthetic-rows", type=int, default=200_000)
    p.add_argument("--models", default=MODELS)
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--mlp", type=_ints, default=[400, 400, 400])
    p.add_argument("--mlp-ranks", type=_ints, default=[64])
    p.add_argument("--emb-ranks", type=_ints, default=[2, 4, 8])
    p.add_argument("--pipeline-emb-rank", type=int, default=2)
    p.add_argument("--tt-min-vocab", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ft-lr", type=float, default=None, help="default: the base model's last lr")
    p.add_argument("--ft-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--eval-split", default="valid")
    p.add_argument("--throughput-batch", type=int, default=10_000)
    p.add_argument("--timing-batches", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--skip",
        type=lambda v: [x for x in v.split(",") if x],
        default=[],
        help="row groups to leave out: mlp, relu, emb, baselines (svd, tt)",
    )
    p.add_argument("--out", type=Path, default=None, help="JSONL file, appended to")
    p.add_argument("--time-budget", type=float, default=None, help="seconds; no new model/seed after it")
    p.add_argument("--smoke", action="store_true", help="tiny synthetic run (minutes on 1 CPU thread)")
    args = p.parse_args(argv)
    if args.smoke:
        args.synthetic_rows, args.models, args.seeds = 8000, "deepfm,nfm", [0]
        args.dim, args.mlp, args.mlp_ranks, args.emb_ranks = 8, [32, 32, 32], [8], [2, 4]
        args.epochs, args.batch_size, args.throughput_batch, args.repeats = 1, 1024, 2000, 3
        args.tt_min_vocab, args.pipeline_emb_rank = 200, 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.data is not None:
        data = EncodedDataset.open(args.data)
    else:
        root = Path(tempfile.gettempdir()) / "ctrzip_bench_lowrank" / str(args.synthetic_rows)
        data = synthetic_dataset(root, args.synthetic_rows)
    out = (
        args.out
        or Path("benchmarks/results") / f"lowrank_{machine_tag()}{'_smoke' if args.smoke else ''}.jsonl"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, data, out)
    # seed-major: a run cut short still has every model at the first seeds
    for seed, name in ((s, n) for s in args.seeds for n in args.models.split(",")):
        if args.time_budget is not None and time.perf_counter() - t0 > args.time_budget:
            print(f"time budget of {args.time_budget}s spent: stopping before {name} seed {seed}")
            break
        bench.run(name, seed)
    print(f"{len(bench.records)} rows appended to {out} in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
