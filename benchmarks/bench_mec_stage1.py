"""MEC stage 1: one batched loop for all fields vs the per-field loop, and its cost against a
training epoch (issue 13, item 5).

Part A (demo data): train DeepFM (the demo's settings: d=16, MLP 200x3, batch 4096) for one
epoch and time it (training only); then stage 1 on its trained tables for every field PQ can
shrink at (M, K), once per field (``fit_codes``) and once batched (``fit_codes_batched``), in
the same run; the codes of both are compared.

Part B (Criteo at 45M rows, projected): stage 1 on synthetic tables of real Criteo's
vocabulary (min_count 10, ``projection.CRITEO_C``), fields chosen by MEC's rule at
``--min-vocab``, every vocabulary scaled by ``--scale`` so that it runs in minutes; per-field
and batched again. The time splits into a part linear in the vocabulary (k-means, final
assignment: a ``steps=0`` run) and the Adam loop, linear in the rows it samples (sum of
steps x batch from ``CodeLearningConfig.budget``); each part is scaled to the full vocabulary.
The epoch is Part A's, extrapolated linearly from the demo's training rows to ``--rows-45m``.

    python benchmarks/bench_mec_stage1.py --threads 1

Writes ``benchmarks/results/mec_stage1_<machine>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctrzip.compression.mec.diagnostics import as_tensor_counts
from ctrzip.compression.mec.fields import field_decisions
from ctrzip.compression.mec.method import MECConfig
from ctrzip.compression.mec.projection import CRITEO_C
from ctrzip.compression.mec.stage1 import CodeLearningConfig, fit_codes
from ctrzip.compression.mec.stage1_batched import fit_codes_batched
from ctrzip.data.dataset import EncodedDataset
from ctrzip.models.base import build_model
from ctrzip.train import TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

DEMO = Path.home() / ".cache/ctrzip/demo-criteo-like-400000-s0/encoded"


def timed_stage1(
    tables: list[torch.Tensor], counts: list[torch.Tensor], m: int, k: int, cfg: CodeLearningConfig
) -> dict[str, Any]:
    """Per-field loop and batched loop on the same inputs, in this order; codes compared."""
    t0, c0 = time.perf_counter(), time.process_time()
    ref = [fit_codes(t, c, m, k, cfg, seed=0) for t, c in zip(tables, counts, strict=True)]
    per_field, per_field_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    got = fit_codes_batched(tables, counts, m, k, cfg, seed=0)
    batched, batched_cpu = time.perf_counter() - t0, time.process_time() - c0
    same = [bool(torch.equal(r.codes, g.codes)) for r, g in zip(ref, got, strict=True)]
    agree = [float((r.codes == g.codes).float().mean()) for r, g in zip(ref, got, strict=True)]
    rel = [
        float((r.decoded - g.decoded).norm() / r.decoded.norm().clamp_min(1e-30))
        for r, g in zip(ref, got, strict=True)
    ]
    return {
        "fields": len(tables),
        "rows": sum(len(t) for t in tables),
        "sampled_rows": sum(r.steps * r.batch_size for r in ref),
        "steps": [r.steps for r in ref],
        "batch": [r.batch_size for r in ref],
        "per_field_s": round(per_field, 2),
        "batched_s": round(batched, 2),
        "speedup": round(per_field / batched, 3),
        "per_field_cpu_s": round(per_field_cpu, 2),
        "batched_cpu_s": round(batched_cpu, 2),
        "speedup_cpu_time": round(per_field_cpu / batched_cpu, 3),
        "fields_with_identical_codes": sum(same),
        "min_code_agreement": round(min(agree), 6),
        "max_relative_decoded_diff": max(rel),
    }


def epoch_seconds(data: EncodedDataset, seed: int) -> tuple[torch.nn.Module, float, float, int]:
    """One demo-settings DeepFM epoch; the trainer's own training time (validation excluded)."""
    torch.manual_seed(seed)
    model = build_model("deepfm", data.schema, {"embedding_dim": 16, "mlp": [200, 200, 200]})
    cfg = TrainConfig(
        epochs=1, batch_size=4096, lr=1e-3, embedding_l2=1e-5, device="cpu", progress=False, seed=seed
    )
    c0 = time.process_time()
    hist = Trainer(cfg).fit(model, data["train"], data["valid"])
    cpu = time.process_time() - c0  # includes one validation pass (1/8 of the training rows)
    n = len(data["train"])
    return model, sum(n / rec["samples_per_s"] for rec in hist.epochs), cpu, n


def demo_part(
    model: torch.nn.Module, data: EncodedDataset, m: int, k: int, cfg: CodeLearningConfig
) -> dict[str, Any]:
    mec = MECConfig(min_vocab=3, num_subspaces=m, codebook_size=k, progress=False)
    names = list(model.embedding.tables)
    chosen = [
        n for n, d in zip(names, field_decisions(model, mec), strict=True) if d["action"] == "compressed"
    ]
    tables, counts = [], []
    for name in chosen:
        table = model.embedding.tables[name]
        v = table.num_embeddings
        tables.append(table.materialize().detach()[1 : v - 1])
        counts.append(as_tensor_counts(data.counts.get(name), v)[1 : v - 1])
    return {"fields_quantized": chosen, **timed_stage1(tables, counts, m, k, cfg)}


def criteo_part(
    scale: float, min_vocab: int, dim: int, m: int, k: int, cfg: CodeLearningConfig, seed: int
) -> dict[str, Any]:
    full = [v for v in CRITEO_C if v >= min_vocab and v - 2 >= k]
    rng = np.random.default_rng(seed)
    tables, counts = [], []
    for v in full:
        n = max(k + 1, round(v * scale))
        tables.append(torch.from_numpy(rng.normal(0, 0.01, (n, dim)).astype(np.float32)))
        counts.append(torch.from_numpy(rng.zipf(1.3, n).clip(max=10**6)))
    timing = timed_stage1(tables, counts, m, k, cfg)
    # the part linear in the vocabulary (k-means + final assignment): a run with no Adam step
    t0, c0 = time.perf_counter(), time.process_time()
    fit_codes_batched(tables, counts, m, k, dataclasses.replace(cfg, steps=0), seed=0)
    vocab_s, vocab_cpu = time.perf_counter() - t0, time.process_time() - c0
    loop_s = max(0.0, timing["batched_s"] - vocab_s)
    loop_cpu = max(0.0, timing["batched_cpu_s"] - vocab_cpu)
    rows_full = sum(v - 2 for v in full)
    sampled_full = sum(s * b for s, b in (cfg.budget(v - 2) for v in full))
    vocab_x, loop_x = rows_full / timing["rows"], sampled_full / timing["sampled_rows"]
    projected = vocab_s * vocab_x + loop_s * loop_x
    projected_cpu = vocab_cpu * vocab_x + loop_cpu * loop_x
    return {
        "full_scale_vocab": full,
        "scale": scale,
        "min_vocab": min_vocab,
        **timing,
        "vocab_linear_part_s": round(vocab_s, 2),
        "loop_part_s": round(loop_s, 2),
        "full_rows": rows_full,
        "full_sampled_rows": sampled_full,
        "vocab_linear_part_cpu_s": round(vocab_cpu, 2),
        "loop_part_cpu_s": round(loop_cpu, 2),
        "projected_batched_s_at_full_vocab": round(projected, 1),
        "projected_batched_cpu_s_at_full_vocab": round(projected_cpu, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEMO)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--M", type=int, default=4)
    ap.add_argument("--K", type=int, default=256)
    ap.add_argument("--scale", type=float, default=0.05, help="Part B vocabulary scale")
    ap.add_argument("--min-vocab", type=int, default=10_000, help="Part B field rule (MEC default)")
    ap.add_argument("--rows-45m", type=float, default=45e6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="mec_stage1_cpu2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = EncodedDataset.open(args.data)
    cfg = MECConfig().code_learning  # the mec preset
    model, epoch_s, epoch_cpu, n_train = epoch_seconds(data, args.seed)
    print(f"epoch: {n_train:,} rows in {epoch_s:.1f} s ({epoch_cpu:.1f} s CPU with validation)", flush=True)
    demo = demo_part(model, data, args.M, args.K, cfg)
    print("demo:", demo, flush=True)
    criteo = criteo_part(args.scale, args.min_vocab, 16, args.M, args.K, cfg, args.seed)
    print("criteo:", criteo, flush=True)
    epoch_45m = epoch_s * args.rows_45m / n_train
    epoch_45m_cpu = epoch_cpu * args.rows_45m / n_train
    payload = {
        "note": (
            "CPU only (no GPU lent); 2-core machine shared with other jobs (load ~10), so compare ratios "
            "measured in one run; *_cpu_* figures are process CPU time, less inflated by the contention. "
            f"torch threads {args.threads}. The 45M-row epoch is extrapolated linearly from the demo epoch; "
            "stage 1 at Criteo's vocabulary is projected from a run at --scale (see the script docstring)."
        ),
        "settings": {"M": args.M, "K": args.K, "dim": 16, "code_learning": "mec preset (defaults)"},
        "epoch": {
            "train_rows": n_train,
            "seconds": round(epoch_s, 2),
            "seconds_at_45m_rows": round(epoch_45m, 1),
            "cpu_seconds_with_validation": round(epoch_cpu, 2),
            "cpu_seconds_at_45m_rows": round(epoch_45m_cpu, 1),
        },
        "demo": {**demo, "batched_fraction_of_demo_epoch": round(demo["batched_s"] / epoch_s, 4)},
        "criteo_projection": {
            **criteo,
            "fraction_of_45m_epoch": round(criteo["projected_batched_s_at_full_vocab"] / epoch_45m, 4),
            "fraction_of_45m_epoch_cpu_time": round(
                criteo["projected_batched_cpu_s_at_full_vocab"] / epoch_45m_cpu, 4
            ),
        },
    }
    print(write_result(args.name, payload))


if __name__ == "__main__":
    main()
