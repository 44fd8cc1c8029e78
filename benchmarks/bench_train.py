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

* ``--fusion``: per model (``--models``, default DeepFM, PNN, DCNv2), training samples/s with
  per-field lookups (``train.fuse_embeddings=false``) vs fused lookups (one gather per group of
  packed tables, the default), end to end through ``Trainer.fit`` and as the bare step; plus the
  bare step with sparse gradients and ``LazyAdam`` (row-wise Adam on the rows in the batch; not
  a trainer setting: it changes the result). Ratios are against per-field in the same run.
  ``--peer-settings`` uses the FuxiCTR comparison's shape instead (its 39 vocab sizes, D=16,
  batch 4096, embedding L2 1e-5, the models' default MLPs) and puts the measured fused speed-up
  next to the last ``peer_fuxictr.py`` figures (``results/peer_fuxictr_criteo_like.json``;
  FuxiCTR itself is rerun only by that script, so those figures are marked stale).

The device is synchronized before every clock read; warm-up is excluded; intra-op threads are
fixed; e2e and bare alternate ``--repeats`` times and medians are reported. ``--profile`` runs
``torch.profiler`` over a few e2e steps and prints the top operators by self time.

    python benchmarks/bench_train.py --device auto --warmup 2 --steps 8 --threads 1
    python benchmarks/bench_train.py --device cuda --warmup 20 --steps 200 --repeats 3
    python benchmarks/bench_train.py --fusion --warmup 2 --steps 6 --repeats 2
    python benchmarks/bench_train.py --fusion --peer-settings --steps 10 --repeats 3
"""

from __future__ import annotations

import argparse
import json
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

from ctrzip.bench.provenance import machine  # noqa: E402
from ctrzip.compression.mec.projection import CRITEO_C, CRITEO_I  # noqa: E402  (Criteo vocab, min_count 10)
from ctrzip.data.batch import Batch  # noqa: E402
from ctrzip.data.dataset import EncodedDataset, SplitArrays, save_split  # noqa: E402
from ctrzip.data.loader import BatchLoader, resolve_device  # noqa: E402
from ctrzip.data.schema import FeatureSchema, FieldSpec  # noqa: E402
from ctrzip.models.base import CTRModel, build_model  # noqa: E402
from ctrzip.nn.embedding.field import FieldEmbedding  # noqa: E402
from ctrzip.nn.embedding.fused_plan import set_fuse  # noqa: E402
from ctrzip.nn.embedding.lazy_adam import LazyAdam  # noqa: E402
from ctrzip.train import TrainConfig, Trainer, predict  # noqa: E402

PEER_RESULT = HERE / "results" / "peer_fuxictr_criteo_like.json"


def synthetic_schema(total_vocab: int, sizes: list[int] | None = None) -> FeatureSchema:
    """39 categorical fields: the I-field sizes as is, C-field sizes scaled to reach ``total_vocab``
    (or the given ``sizes``, in I1..I13, C1..C26 order)."""
    if sizes is None:
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


def make_model(schema: FeatureSchema, args: argparse.Namespace, device: torch.device, name: str = "deepfm",
               fuse: bool = True, sparse_grad: bool = False) -> CTRModel:  # fmt: skip
    """``name`` with D=``args.dim`` and ``args.mlp`` (None: the model's default MLP)."""
    torch.manual_seed(0)
    params: dict[str, Any] = {"embedding_dim": args.dim}
    if args.mlp is not None:
        params["mlp"] = list(args.mlp)
    model = build_model(name, schema, params).to(device)
    set_fuse(model, fuse)
    for m in model.modules():
        if isinstance(m, FieldEmbedding):
            m.sparse_grad = sparse_grad
    return model


def device_sync(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


Timing = tuple[float, list[float]]  # samples/s over the window, per-step seconds (CPU only)


def run_e2e(schema: FeatureSchema, split: SplitArrays, args: argparse.Namespace, device: torch.device,
            name: str = "deepfm", **train_over: Any) -> Timing:  # fmt: skip
    """Samples/s of ``Trainer.fit`` reading the memory-mapped split, over the timed window."""
    model = make_model(schema, args, device, name)
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


def run_bare(schema: FeatureSchema, batches: list[Batch], args: argparse.Namespace, device: torch.device,
             name: str = "deepfm", fuse: bool = True, lazy: bool = False) -> Timing:  # fmt: skip
    """Samples/s of the plain PyTorch step on on-device batches (the floor the trainer should reach).

    ``lazy``: sparse gradients from the packed tables and ``LazyAdam`` (row-wise updates)."""
    model = make_model(schema, args, device, name, fuse=fuse, sparse_grad=lazy)
    model.train()
    params = list(model.parameters())
    opt = LazyAdam(params, lr=1e-3, fused=True) if lazy else _adam(params, 1e-3)
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


FUSION_MODELS = ("deepfm", "pnn", "dcnv2")


def machine_name(device: torch.device) -> str:
    """The machine in words, for the result and the printed header."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    m = machine()
    return f"{m['cpu']}, {m['cores']} cores (shared with other jobs: compare ratios, not absolutes)"


def peer_figures() -> dict[str, Any] | None:
    """The last ``peer_fuxictr.py`` run: per model ctrzip/FuxiCTR train samples/s and settings."""
    if not PEER_RESULT.exists():
        return None
    d = json.loads(PEER_RESULT.read_text())
    out: dict[str, Any] = {"when": d.get("when"), "git": d.get("git"), "models": {}}
    for r in d["results"]:
        runs = r["runs"]
        out["models"][r["model"]] = {
            "hp": r["hp"],
            "ctrzip": statistics.median(x["samples_per_s"] for x in runs["ctrzip"]),
            "fuxictr": statistics.median(x["samples_per_s"] for x in runs["fuxictr"]),
            "vocab_sizes": runs["ctrzip"][0].get("vocab_sizes"),
        }
    return out


def _per_step(timings: list[Timing], batch_size: int) -> float:
    """Samples/s from the per-step median (CPU) or the window median (GPU)."""
    steps = [s for _, ps in timings for s in ps]
    return batch_size / statistics.median(steps) if steps else statistics.median(w for w, _ in timings)


def run_fusion(args: argparse.Namespace, device: torch.device) -> None:
    """Per model: e2e and bare samples/s, per-field vs fused (vs fused + LazyAdam, bare)."""
    peer = peer_figures() if args.peer_settings else None
    sizes = None
    if args.peer_settings:
        if peer is None:
            raise SystemExit(f"--peer-settings needs {PEER_RESULT}")
        first = next(iter(peer["models"].values()))
        sizes = [v + 2 for v in first["vocab_sizes"].values()]  # + padding and OOV ids
        args.dim, args.batch_size = first["hp"]["embedding_dim"], first["hp"]["batch_size"]
        args.embedding_l2 = first["hp"]["embedding_l2"]
    schema = synthetic_schema(args.total_vocab, sizes)
    rows = (args.warmup + args.steps + 2) * args.batch_size
    over = {"embedding_l2": args.embedding_l2}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        split = write_dataset(Path(tmp), schema, rows)
        batches = device_batches(split, min(args.steps, 16), args.batch_size, device)
        for name in args.models:
            runs: dict[str, list[Timing]] = {}
            for _ in range(args.repeats):  # alternate so slow phases of a shared machine hit all
                for fuse in (False, True):
                    tag = "fused" if fuse else "per_field"
                    runs.setdefault(f"e2e_{tag}", []).append(
                        run_e2e(schema, split, args, device, name, fuse_embeddings=fuse, **over)
                    )
                    runs.setdefault(f"bare_{tag}", []).append(
                        run_bare(schema, batches, args, device, name, fuse)
                    )
                runs.setdefault("bare_fused_lazy", []).append(
                    run_bare(schema, batches, args, device, name, True, lazy=True)
                )
                print(f"{name}: repeat done, {time.strftime('%H:%M:%S')}", file=sys.stderr, flush=True)
            sps = {k: _per_step(v, args.batch_size) for k, v in runs.items()}
            results[name] = {
                "samples_per_s": sps,
                "fused_over_per_field_e2e": sps["e2e_fused"] / sps["e2e_per_field"],
                "fused_over_per_field_bare": sps["bare_fused"] / sps["bare_per_field"],
                "lazy_over_per_field_bare": sps["bare_fused_lazy"] / sps["bare_per_field"],
                "lazy_over_fused_bare": sps["bare_fused_lazy"] / sps["bare_fused"],
                "runs": {k: [{"window": w, "step_seconds": ps} for w, ps in v] for k, v in runs.items()},
            }
    where = machine_name(device)
    print(f"device {device}: {where}; threads {args.threads}; D={args.dim}, {schema.total_vocab:,} rows in "
          f"{schema.num_fields} tables, batch {args.batch_size}, embedding_l2 {args.embedding_l2:g}, "
          f"{args.steps} timed steps x {args.repeats} repeats (per-step medians)")  # fmt: skip
    print("| model | e2e per-field | e2e fused | fused/per-field | bare per-field | bare fused | "
          "fused/per-field | bare fused+LazyAdam | lazy/per-field |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        s = r["samples_per_s"]
        cells = [f"{s[k]:,.0f}" for k in ("e2e_per_field", "e2e_fused")]
        cells.append(f"{r['fused_over_per_field_e2e']:.2f}x")
        cells += [f"{s[k]:,.0f}" for k in ("bare_per_field", "bare_fused")]
        cells.append(f"{r['fused_over_per_field_bare']:.2f}x")
        cells += [f"{s['bare_fused_lazy']:,.0f}", f"{r['lazy_over_per_field_bare']:.2f}x"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    peer_rows = {}
    if peer is not None:
        print(f"\nFuxiCTR (stale: peer_fuxictr.py run {peer['when']}, git {peer['git']}, not rerun here; "
              "its ctrzip figures are per-field lookups):")  # fmt: skip
        print("| model | FuxiCTR train samples/s | ctrzip then | ratio then | fused speed-up now (e2e) "
              "| projected ratio |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for name, r in results.items():
            p = peer["models"].get(name)
            if p is None:
                continue
            then = p["ctrzip"] / p["fuxictr"]
            proj = then * r["fused_over_per_field_e2e"]
            peer_rows[name] = {"fuxictr": p["fuxictr"], "ctrzip_then": p["ctrzip"], "ratio_then": then,
                               "fused_speedup_now": r["fused_over_per_field_e2e"],
                               "projected_ratio": proj}  # fmt: skip
            print(f"| {name} | {p['fuxictr']:,.0f} | {p['ctrzip']:,.0f} | {then:.2f}x | "
                  f"{r['fused_over_per_field_e2e']:.2f}x | {proj:.2f}x (projection) |")  # fmt: skip
    default = "bench_train_fusion_peer_settings" if args.peer_settings else "bench_train_fusion"
    name = args.name or f"{default}_{device.type}"
    path = write_result(name, {
        "device": str(device), "machine_name": where, "threads": args.threads,
        "embedding_dim": args.dim, "mlp": args.mlp, "batch_size": args.batch_size,
        "fields": schema.num_fields, "total_vocab": schema.total_vocab, "embedding_l2": args.embedding_l2,
        "warmup": args.warmup, "steps": args.steps, "repeats": args.repeats, "models": results,
        "peer_fuxictr_stale": {"source": str(PEER_RESULT.name), "when": peer["when"], "git": peer["git"],
                               "rows": peer_rows} if peer else None,
        "data": "synthetic Zipf-like ids on disk (not the peer's criteo-like CSV)",
        "command": " ".join(sys.argv),
    })  # fmt: skip
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (fixed)")
    ap.add_argument("--total-vocab", type=int, default=1_090_000)
    ap.add_argument("--dim", type=int, default=40)
    ap.add_argument(
        "--mlp",
        type=int,
        nargs="+",
        default=None,
        help="MLP widths (default 300 300 300; with --fusion each model's default)",
    )
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", action="store_true", help="also e2e without clipping and with L2")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of e2e steps")
    ap.add_argument("--workdir", type=Path, help="where the encoded dataset goes (default: a temp dir)")
    ap.add_argument("--name", default=None, help="result file name (default bench_train_<device>)")
    ap.add_argument("--fusion", action="store_true", help="per-field vs fused (vs lazy) per model")
    ap.add_argument("--models", nargs="+", default=list(FUSION_MODELS), help="models for --fusion")
    ap.add_argument(
        "--peer-settings",
        action="store_true",
        help="--fusion in the FuxiCTR comparison's shape, next to its last figures",
    )
    ap.add_argument("--embedding-l2", type=float, default=0.0, help="train.embedding_l2 of e2e runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.fusion:
        run_fusion(args, device)
        return
    if args.mlp is None:
        args.mlp = [300, 300, 300]
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
