"""Shared helpers for benchmark scripts: machine description and result files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What ran the benchmark: CPU model, cores, memory, torch version, GPU if any."""
    from ctrzip.bench.provenance import machine as _machine

    return _machine()


def git_sha() -> str:
    """Short commit of the checkout, or ``$CTRZIP_GIT_SHA`` where the tree travels without .git."""
    from ctrzip.bench.provenance import git_sha as _git_sha

    return _git_sha()


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with machine, git sha and timestamp."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": git_sha(),
        "machine": machine(),
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def machine_tag() -> str:
    """Short file-name tag: ``h100``-like GPU name or ``cpu<cores>``."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).lower()
        return next((w for w in name.replace("-", " ").split() if any(c.isdigit() for c in w)), "gpu")
    return f"cpu{os.cpu_count()}"


def run_meta(args: Any) -> dict[str, Any]:
    """Provenance for one benchmark run: machine, torch, git sha and a hash of the arguments."""
    import hashlib

    blob = json.dumps(vars(args), sort_keys=True, default=str).encode()
    return {
        "machine": machine(),
        "machine_tag": machine_tag(),
        "torch": torch.__version__,
        "git": git_sha(),
        "config_hash": hashlib.sha256(blob).hexdigest()[:12],
    }


def add_model_args(ap: Any, models: list[str]) -> None:
    """The data and model options the post-training benchmarks share (demo data by default)."""
    from pathlib import Path as _Path

    ap.add_argument("--data", type=_Path, default=None, help="encoded dataset (default: demo data)")
    ap.add_argument("--rows", type=int, default=400_000, help="demo rows when --data is not given")
    ap.add_argument("--models", nargs="+", default=models)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--mlp", default="400,400,400")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", type=_Path, default=None)


def open_data(args: Any) -> Any:
    """``args.data`` opened, or the cached demo data of ``args.rows`` rows (made once)."""
    from ctrzip.data.dataset import EncodedDataset

    if args.data is None:
        from ctrzip.cli.demo import prepare_demo_data

        args.data = prepare_demo_data(args.rows, 0, progress=False)
    return EncodedDataset.open(args.data)


def train_dense(name: str, data: Any, seed: int, args: Any) -> tuple[Any, float]:
    """Model ``name`` trained ``args.epochs`` on CPU (lr 1e-3, batch 4096); returns it (eval
    mode) and the training seconds."""
    from ctrzip.models.base import build_model
    from ctrzip.train.trainer import TrainConfig, Trainer

    params = {"embedding_dim": args.dim, "mlp": [int(x) for x in args.mlp.split(",")]}
    model = build_model(name, data.schema, params, seed=seed)
    cfg = TrainConfig(epochs=args.epochs, lr=1e-3, batch_size=4096, seed=seed, device="cpu", progress=False)
    t0 = time.perf_counter()
    Trainer(cfg).fit(model, data["train"], data["valid"])
    return model.eval(), time.perf_counter() - t0


def speed_ratios(
    models: dict[str, Any], data: Any, rounds: int = 5, threads: int | None = 1
) -> dict[str, float]:
    """CPU samples/s of each model over ``models["dense"]``'s at batch 10k: interleaved rounds
    (each model timed once per round, ratio to dense in that round), then the median ratio."""
    import statistics

    from ctrzip.bench.timing import time_forward
    from ctrzip.data.loader import BatchLoader

    batches = list(BatchLoader(data["test"], batch_size=10_000))[:2]
    ratios: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        now = {
            k: time_forward(m, batches, warmup=1, repeats=2, threads=threads, device="cpu")["samples_per_s"]
            for k, m in models.items()
        }
        for k in models:
            ratios[k].append(now[k] / now["dense"])
    return {k: statistics.median(v) for k, v in ratios.items()}
