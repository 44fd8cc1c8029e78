"""Training throughput end to end (data loading included) vs the bare model step, plus inference.

Model: DeepFM, 39 fields whose vocab sizes sum to ~1.09M (Criteo's per-field shape after
min_count 10, scaled), D=40 (a ~1.09M x 40 table in total), MLP 300x3, batch 10,000.

* ``e2e``: an encoded dataset on disk (memory-mapped ``.npy``, Zipf-like ids) ->
  ``BatchLoader`` (block shuffle; pinned host memory and async copies on CUDA) ->
  ``Trainer.fit`` with a default ``TrainConfig`` (grad-norm clipping at 10, fused Adam, no L2).
  Timed from outside the trainer by ``StepClock`` over steps ``[warmup, warmup + steps)``.
* ``bare``: the same model, ``steps`` batches already on the device, a plain loop of forward,
  BCE-with-logits, ``zero_grad``, backward, dense Adam step (fused where available); nothing else.
* ``infer``: eval mode, ``torch.inference_mode``, forward only on on-device batches; and
  ``predict`` over the memory-mapped split (loading included).
* ``--variants`` adds e2e runs with clipping off (``no_clip``) and with FuxiCTR-style L2 on the
  embeddings (``l2``: ``1e-5 / 2 * ||W||^2`` over whole tables every step) to attribute cost.

The device is synchronized before every clock read; warm-up is excluded; intra-op threads are
fixed; e2e and bare alternate ``--repeats`` times and medians are reported. ``--profile`` runs
``torch.profiler`` over a few e2e steps and prints the top operators by self time.

    python benchmarks/bench_train.py --device auto --warmup 2 --steps 8 --threads 1
    python benchmarks/bench_train.py --device cuda --warmup 20 --steps 200 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import write_result  # noqa: E402
from peer.clock import StepClock  # noqa: E402

from ctrzip.compression.mec.projection import CRITEO_C, CRITEO_I  # noqa: E402  (Criteo vocab, min_count 10)
from ctrzip.data.batch import Batch  # noqa: E402
from ctrzip.data.dataset import EncodedDataset, SplitArrays, save_split  # noqa: E402
from ctrzip.data.loader import BatchLoader, resolve_device  # noqa: E402
from ctrzip.data.schema import FeatureSchema, FieldSpec  # noqa: E402
from ctrzip.models.base import CTRModel, build_model  # noqa: E402
from ctrzip.train import TrainConfig, Trainer, predict  # noqa: E402


def synthetic_schema(total_vocab: int) -> FeatureSchema:
    """39 categorical fields: the I-field sizes as is, C-field sizes scaled to reach ``total_vocab``."""
    scale = (total_vocab - sum(CRITEO_I)) / sum(CRITEO_C)
    sizes = CRITEO_I + [max(4, round(v * scale)) for v in CRITEO_C]
    names = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    return FeatureSchema(
        tuple(FieldSpec(n, "categorical", vocab_size=v) for n, v in zip(names, sizes, strict=True))
    )


def write_dataset(root: Path, schema: FeatureSchema, rows: int, seed: int = 0) -> SplitArrays:
    """Random Zipf-like ids (p(id) ~ 1/id, id 1 most popular) with a 25% positive rate, on disk."""
    rng = np.random.default_rng(seed)
    sparse = np.empty((rows, schema.num_fields), dtype=np.int32)
    for j, f in enumerate(schema.fields):
        u = rng.random(rows)
        sparse[:, j] = np.minimum(np.exp(u * np.log(f.vocab_size - 1)).astype(np.int64), f.vocab_size - 2)
    label = (rng.random(rows) < 0.25).astype(np.float32)
    schema.save(root / "feature_map.json")
    save_split(root, "train", SplitArrays(sparse, np.zeros((rows, 0), np.float32), label))
    return EncodedDataset.open(root)["train"]


def make_model(schema: FeatureSchema, args: argparse.Namespace, device: torch.device) -> CTRModel:
    torch.manual_seed(0)
    model = build_model("deepfm", schema, {"embedding_dim": args.dim, "mlp": list(args.mlp)})
    return model.to(device)


def device_sync(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


Timing = tuple[float, list[float]]  # samples/s over the window, per-step seconds (CPU only)


def run_e2e(schema: FeatureSchema, split: SplitArrays, args: argparse.Namespace, device: torch.device,
            **train_over: Any) -> Timing:  # fmt: skip
    """Samples/s of ``Trainer.fit`` reading the memory-mapped split, over the timed window."""
    model = make_model(schema, args, device)
    loader = BatchLoader(split, args.batch_size, shuffle=True, seed=0, device=device, drop_last=True)
    clock = StepClock(loader, args.warmup, args.warmup + args.steps, device_sync(device))
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, max_steps=args.warmup + args.steps + 1,
                      progress=False, device=str(device), **train_over)  # fmt: skip
    Trainer(cfg).fit(model, clock)
    per_step = clock.step_seconds if device.type == "cpu" else []
    return args.steps * args.batch_size / clock.seconds, per_step


def device_batches(split: SplitArrays, n: int, batch_size: int, device: torch.device) -> list[Batch]:
    loader = BatchLoader(split, batch_size, shuffle=False, device=device, drop_last=True)
    out = []
    for b in loader:
        out.append(b)
        if len(out) == n:
            break
    return out


def _adam(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def run_bare(
    schema: FeatureSchema, batches: list[Batch], args: argparse.Namespace, device: torch.device
) -> Timing:
    """Samples/s of the plain PyTorch step on on-device batches (the floor the trainer should reach)."""
    model = make_model(schema, args, device)
    model.train()
    opt = _adam(list(model.parameters()), 1e-3)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def step(b: Batch) -> None:
        loss = bce(model(b), b.label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(args.warmup):
        step(batches[i % len(batches)])
    sync = device_sync(device) or (lambda: None)
    sync()
    marks = [time.perf_counter()]
    for i in range(args.steps):
        step(batches[i % len(batches)])
        if device.type == "cpu":  # per-step clock only where nothing runs ahead of the host
            marks.append(time.perf_counter())
    sync()
    t1 = time.perf_counter()
    per_step = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return args.steps * args.batch_size / (t1 - marks[0]), per_step


def run_infer(schema: FeatureSchema, batches: list[Batch], split: SplitArrays, args: argparse.Namespace,
              device: torch.device) -> dict[str, float]:  # fmt: skip
    """Forward-only samples/s: bare (on-device batches) and ``predict`` over the memory-mapped rows."""
    model = make_model(schema, args, device).eval()
    sync = device_sync(device) or (lambda: None)
    with torch.inference_mode():
        for b in batches[: max(1, args.warmup)]:
            model(b)
        sync()
        t0 = time.perf_counter()
        for i in range(args.steps):
            model(batches[i % len(batches)])
        sync()
        bare = args.steps * args.batch_size / (time.perf_counter() - t0)
    n = args.steps * args.batch_size
    part = SplitArrays(split.sparse[:n], split.dense[:n], split.label[:n])
    predict(model, part, batch_size=args.batch_size, device=device)  # warm-up
    t0 = time.perf_counter()
    predict(model, part, batch_size=args.batch_size, device=device)  # returns host numpy: synchronized
    return {"infer_bare": bare, "infer_predict": n / (time.perf_counter() - t0)}


def profile_e2e(
    schema: FeatureSchema, split: SplitArrays, args: argparse.Namespace, device: torch.device
) -> str:
    """Top operators (self time) of a few ``Trainer.fit`` steps, warm-up included in the fit."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        run_e2e(schema, split, args, device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=25)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (fixed)")
    ap.add_argument("--total-vocab", type=int, default=1_090_000)
    ap.add_argument("--dim", type=int, default=40)
    ap.add_argument("--mlp", type=int, nargs="+", default=[300, 300, 300])
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", action="store_true", help="also e2e without clipping and with L2")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of e2e steps")
    ap.add_argument("--workdir", type=Path, help="where the encoded dataset goes (default: a temp dir)")
    ap.add_argument("--name", default=None, help="result file name (default bench_train_<device>)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    schema = synthetic_schema(args.total_vocab)
    rows = (args.warmup + args.steps + 2) * args.batch_size

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        split = write_dataset(Path(tmp), schema, rows)
        batches = device_batches(split, min(args.steps, 16), args.batch_size, device)
        runs: dict[str, list[Timing]] = {"e2e": [], "bare": []}
        variants = (
            {"no_clip": {"clip_grad_norm": None}, "l2": {"embedding_l2": 1e-5}} if args.variants else {}
        )
        for _ in range(args.repeats):  # alternate so slow phases of a shared machine hit both
            runs["e2e"].append(run_e2e(schema, split, args, device))
            runs["bare"].append(run_bare(schema, batches, args, device))
            for name, over in variants.items():
                runs.setdefault(f"e2e_{name}", []).append(run_e2e(schema, split, args, device, **over))
        infer = run_infer(schema, batches, split, args, device)
        prof = profile_e2e(schema, split, args, device) if args.profile else None

    med = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    # per-step medians (CPU) shrug off bursts from other users of a shared machine
    step = {
        k: args.batch_size / statistics.median(s for _, ps in v for s in ps)
        for k, v in runs.items()
        if v[0][1]
    }
    ratio = (step or med)["e2e"] / (step or med)["bare"]
    print(f"device {device} ({torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'}), "
          f"threads {args.threads}, DeepFM D={args.dim} mlp={args.mlp}, {schema.total_vocab:,} rows "
          f"in {schema.num_fields} tables, batch {args.batch_size}, {args.steps} timed steps")  # fmt: skip
    print("| measure | samples/s, window median | windows | samples/s, per-step median | / bare |")
    print("|---|---|---|---|---|")
    for k, v in med.items():
        per = step.get(k)
        rel = (per / step["bare"]) if per else (v / med["bare"])
        windows = ", ".join(f"{w:,.0f}" for w, _ in runs[k])
        print(f"| train {k} | {v:,.0f} | {windows} | {f'{per:,.0f}' if per else '-'} | {rel:.3f} |")
    for k, v in infer.items():
        print(f"| {k} | {v:,.0f} | 1 | - | - |")
    if prof:
        print(prof)
    name = args.name or f"bench_train_{device.type}"
    path = write_result(name, {
        "device": str(device), "threads": args.threads, "model": "deepfm", "embedding_dim": args.dim,
        "mlp": args.mlp, "batch_size": args.batch_size, "fields": schema.num_fields,
        "total_vocab": schema.total_vocab, "warmup": args.warmup, "steps": args.steps,
        "repeats": args.repeats, "train_samples_per_s": med, "train_samples_per_s_step_median": step,
        "train_runs": {k: [{"window": w, "step_seconds": ps} for w, ps in v] for k, v in runs.items()},
        "e2e_over_bare": ratio, "inference_samples_per_s": infer, "profile": prof,
        "command": " ".join(sys.argv),
    })  # fmt: skip
    print(f"e2e / bare = {ratio:.3f}; wrote {path}")


if __name__ == "__main__":
    main()
