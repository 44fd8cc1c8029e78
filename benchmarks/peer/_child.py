"""What both child runners share: reading the job, fixing threads, peak memory, writing the result.

A child is ``python benchmarks/peer/run_<library>.py JOB.json``; it writes ``job["out"]`` (JSON).
Each library trains in its own process so neither inherits the other's allocator, thread pool
or imported state.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

# Neutral model settings -> each library's constructor arguments are mapped in the runners;
# these are the model names both sides understand.
MODELS = ("deepfm", "pnn", "dcnv2")


def read_job() -> dict[str, Any]:
    """The job dict from argv[1]; fixes torch's intra-op threads to ``job["threads"]``."""
    job = json.loads(Path(sys.argv[1]).read_text())
    import torch

    torch.set_num_threads(int(job["threads"]))
    return job


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_out(job: dict[str, Any], result: dict[str, Any]) -> None:
    import torch

    result.update(threads=torch.get_num_threads(), peak_rss_mb=peak_rss_mb(), pid=os.getpid())
    Path(job["out"]).write_text(json.dumps(result, indent=2, default=float))


def throughput(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else float("nan")


def run_fields(
    model: Any,
    vocab_sizes: dict[str, int],
    *,
    n_train: int,
    epochs_run: int,
    fit_s: float,
    train_s: float,
    auc: float,
    logloss: float,
    eval_t0: float,
) -> dict[str, Any]:
    """The result fields both libraries report, computed the same way (rows = n_train * epochs)."""
    import time

    rows = n_train * epochs_run
    return {
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "vocab_sizes": vocab_sizes,
        "train_rows": n_train,
        "epochs_run": epochs_run,
        "fit_s": fit_s,
        "train_s": train_s,
        "samples_per_s": throughput(rows, train_s),
        "fit_samples_per_s": throughput(rows, fit_s),
        "test_auc": float(auc),
        "test_logloss": float(logloss),
        "test_eval_s": time.perf_counter() - eval_t0,
    }
