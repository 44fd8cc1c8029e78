"""ctrzip vs FuxiCTR, side by side: same CSV files, same hyperparameters, one run.

Trains DeepFM, PNN and DCNv2 in both libraries and prints test AUC, logloss and training
samples/s per model; writes ``benchmarks/results/peer_fuxictr_<dataset>.json``.

Setup (FuxiCTR is a benchmark-only extra; never a dependency of ctrzip):

1. FuxiCTR 2.3.10 calls polars' ``scan_csv(dtypes=...)``, removed in polars 2, so give it its own
   environment that sees ctrzip and torch but has polars 1.x::

       python -m venv --system-site-packages ~/.cache/ctrzip-peer/venv
       ~/.cache/ctrzip-peer/venv/bin/pip install 'fuxictr==2.3.10' 'polars<2'

   (``pip install -e '.[peer]'`` installs the same into the current environment.)
2. The PyPI wheel has no ``model_zoo`` (DeepFM, PNN, DCNv2 live there). Get the sources of the
   FuxiCTR GitHub repository (reczoo/FuxiCTR) into a cache folder outside this repository, e.g.
   ``git clone --depth 1 https://github.com/reczoo/FuxiCTR ~/.cache/ctrzip-peer/FuxiCTR``, and pass
   ``--fuxictr-zoo ~/.cache/ctrzip-peer/FuxiCTR/model_zoo``. Their code is loaded at run time and
   never copied into ctrzip.

Run::

    python benchmarks/peer_fuxictr.py --dataset ml100k_mini --fuxictr-zoo Z --fuxictr-python V
    python benchmarks/peer_fuxictr.py --dataset criteo_like --rows 1000000 --epochs 1 \\
        --fuxictr-zoo Z --fuxictr-python V

What is the same on both sides: the CSV splits (criteo-like: numeric fields bucketed by
floor(ln(v)^2) and missing values written as the token ``NA`` before either library reads them),
``min_count``, embedding dim, MLP widths, Adam and its lr, batch size, epochs, L2 on embeddings
(lambda/2 * ||W||^2 over whole tables, every step, first-order tables included; none on the
rest), gradient clipping at norm 10, lr decay x0.1 on a non-improving validation AUC, early
stopping patience 2, best-validation weights restored, torch intra-op threads, the seed value.
The ids both encoders produce are compared (``id_agreement`` in the JSON).

What differs (by design of each library): weight init (FuxiCTR: Xavier-normal Linear weights
and zero biases; ctrzip: PyTorch's default Linear init; both N(0, 1e-4) embeddings), loss form
(sigmoid + BCE vs BCE with logits), shuffling (Ray Data full shuffle vs ctrzip block shuffle),
the random streams, and data loading (FuxiCTR reads parquet through Ray Data; ctrzip memory-maps
numpy arrays; the runner starts Ray itself on 127.0.0.1 without its dashboard, and FuxiCTR then
skips its own ``ray.init``). Fused Adam on ctrzip's side, the reference Adam on FuxiCTR's.

Throughput columns: ``train`` = training rows / (fit time minus in-fit validation and
checkpointing), data loading included; ``fit`` = rows / whole ``fit`` wall time; ``step`` = one
training step on batches already in memory (no data loading, 1 warm-up step excluded).
Each library runs in its own subprocess, one after the other, with the same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peer"))
sys.path.insert(0, str(HERE))
from _common import write_result  # noqa: E402
from compare import aggregate, id_agreement, side_by_side, targets, targets_table  # noqa: E402
from data import PeerDataset, criteo_like_csv, ml100k_mini  # noqa: E402

ARCH = {  # model -> neutral architecture settings (mapped to each library by its runner)
    "deepfm": {"mlp": [400, 400, 400]},
    "pnn": {"mlp": [300, 300, 300]},
    "dcnv2": {"mlp": [500, 500, 500], "num_cross_layers": 3},
}
DATASETS = {  # defaults per dataset: (batch_size, epochs, min_count)
    "criteo_like": (4096, 1, 10),
    "ml100k_mini": (128, 3, 1),
}


def prepare_dataset(args: argparse.Namespace) -> PeerDataset:
    if args.dataset == "ml100k_mini":
        return ml100k_mini(args.ml100k_root, min_count=args.min_count)
    raw = args.raw or args.workdir / f"criteo_like_{args.rows}.tsv"
    if not Path(raw).exists():
        from ctrzip.data.synthetic import generate

        print(f"generating {raw} ({args.rows:,} rows)", flush=True)
        generate("criteo-like", raw, rows=args.rows, seed=0, workers=2, progress=False)
    out = args.workdir / f"csv_{Path(raw).stem}_mc{args.min_count}"
    return criteo_like_csv(raw, out, seed=args.seed, min_count=args.min_count)


def run_child(side: str, job: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Run one library's runner in a fresh process; its result JSON, or ``{"error": ...}``."""
    name = PeerDataset.from_dict(job["dataset"]).name
    tag = f"{name}_{side}_{job.get('model', 'prepare')}" + (f"_s{job['hp']['seed']}" if "hp" in job else "")
    jobs = args.workdir / "jobs"
    jobs.mkdir(exist_ok=True)
    job_path = jobs / f"job_{tag}.json"
    job["out"] = str(jobs / f"out_{tag}.json")
    Path(job["out"]).unlink(missing_ok=True)
    job_path.write_text(json.dumps(job))
    python = args.fuxictr_python if side == "fuxictr" else sys.executable
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    log = jobs / f"log_{tag}.txt"
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(
            [python, str(HERE / "peer" / f"run_{side}.py"), str(job_path)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not Path(job["out"]).exists():
        tail = log.read_text()[-1500:]
        print(f"[{tag}] failed (exit {proc.returncode}); log {log}:\n{tail}", flush=True)
        return {"error": f"exit {proc.returncode}, see {log}"}
    res = json.loads(Path(job["out"]).read_text())
    res["process_wall_s"] = wall
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="ml100k_mini")
    ap.add_argument("--models", nargs="+", choices=sorted(ARCH), default=["deepfm", "pnn", "dcnv2"])
    ap.add_argument("--rows", type=int, default=1_000_000, help="criteo_like: rows to generate")
    ap.add_argument("--raw", type=Path, help="criteo_like: an existing raw Criteo-layout TSV")
    ap.add_argument("--ml100k-root", type=Path, default=HERE.parent.parent / "shared/data/ml100k_mini")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--min-count", type=int)
    ap.add_argument("--embedding-dim", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--embedding-l2", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=2024, help="seed of the criteo_like row split")
    ap.add_argument(
        "--seeds", type=int, nargs="+", default=[2024], help="training seeds (>= 3 to claim a gap)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads, the same for both")
    ap.add_argument("--step-batches", type=int, default=20, help="batches for step-only timing (0: skip)")
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache/ctrzip-peer")
    ap.add_argument("--fuxictr-zoo", type=Path, help="FuxiCTR model_zoo folder (see the docstring)")
    ap.add_argument("--fuxictr-python", default=sys.executable, help="interpreter with fuxictr installed")
    ap.add_argument("--skip-fuxictr", action="store_true", help="only ctrzip (no peer numbers)")
    args = ap.parse_args()
    bs, ep, mc = DATASETS[args.dataset]
    args.batch_size, args.epochs = args.batch_size or bs, args.epochs or ep
    args.min_count = args.min_count or mc
    if not args.skip_fuxictr and (args.fuxictr_zoo is None or not args.fuxictr_zoo.is_dir()):
        ap.error("--fuxictr-zoo must point at FuxiCTR's model_zoo folder (or pass --skip-fuxictr)")
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)

    ds = prepare_dataset(args)
    sides = ["ctrzip"] + ([] if args.skip_fuxictr else ["fuxictr"])
    run_dir = args.workdir / f"{ds.name}_{ds.rows.get('train', 0)}_mc{ds.min_count}"
    base = {
        "dataset": ds.to_dict(),
        "threads": args.threads,
        "zoo": str(args.fuxictr_zoo),
        "step_batches": args.step_batches,
    }
    prep = {s: run_child(s, {**base, "work": str(run_dir / s), "prepare_only": True}, args) for s in sides}
    ids = None
    if "fuxictr" in prep and "error" not in prep["fuxictr"] and "error" not in prep["ctrzip"]:
        try:
            ids = id_agreement(prep["ctrzip"]["data"]["encoded"], prep["fuxictr"]["data"]["train"])
        except (OSError, KeyError, ValueError) as err:
            ids = {"error": repr(err)}
        print(f"id agreement on train: {ids}", flush=True)
    hp = {
        "embedding_dim": args.embedding_dim,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "embedding_l2": args.embedding_l2,
        "net_l2": 0.0,
        "clip_grad_norm": 10.0,
        "early_stop_patience": 2,
    }
    rows = []
    for model in args.models:
        row: dict[str, Any] = {"model": model, "hp": {**hp, **ARCH[model]}, "seeds": args.seeds, "runs": {}}
        for seed in args.seeds:
            for side in sides:
                print(f"[{model} seed {seed}] training with {side} ...", flush=True)
                job = {**base, "work": str(run_dir / side), "model": model, "hp": {**row["hp"], "seed": seed}}
                row["runs"].setdefault(side, []).append(run_child(side, job, args))
        for side in sides:
            row[side] = aggregate(row["runs"][side])
        row["targets"] = targets(row)
        rows.append(row)
        print(side_by_side([row]), flush=True)
    table, summary = side_by_side(rows), targets_table(rows)
    print(
        f"\n{ds.name}: {ds.rows} rows, min_count {ds.min_count}, D={args.embedding_dim}, "
        f"batch {args.batch_size}, epochs {args.epochs}, threads {args.threads}, seeds {args.seeds}\n\n"
        f"{table}\n\n{summary}"
    )
    path = write_result(
        f"peer_fuxictr_{ds.name}",
        {
            "dataset": ds.to_dict(),
            "threads": args.threads,
            "prepare": prep,
            "id_agreement": ids,
            "results": rows,
            "table": table,
            "targets_table": summary,
            "command": " ".join(sys.argv),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
