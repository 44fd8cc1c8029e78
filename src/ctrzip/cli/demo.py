"""``ctrzip demo``: synthetic criteo-like data -> DeepFM -> compression rows, in minutes on a CPU."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer

from ctrzip.cli._common import console, print_table


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)


def cache_dir() -> Path:
    """``$CTRZIP_CACHE`` or ``~/.cache/ctrzip``."""
    return Path(os.environ.get("CTRZIP_CACHE", Path.home() / ".cache" / "ctrzip"))


def prepare_demo_data(rows: int, seed: int, progress: bool = True) -> Path:
    """Generate and encode a criteo-like set once; later calls reuse the cached folder."""
    from ctrzip.data.encode import encode_dataset
    from ctrzip.data.synthetic import generate

    root = cache_dir() / f"demo-criteo-like-{rows}-s{seed}"
    encoded = root / "encoded"
    if (encoded / "feature_map.json").exists() and (encoded / "test_label.npy").exists():
        console.print(f"using cached demo data in {root}")
        return encoded
    root.mkdir(parents=True, exist_ok=True)
    raw = root / "train.txt"
    console.print(f"generating {rows:,} criteo-like rows into {raw}")
    generate("criteo-like", raw, rows=rows, seed=seed, progress=progress)
    console.print(f"encoding into {encoded}")
    encode_dataset("criteo", raw, encoded, progress=progress)
    raw.unlink()  # the encoded arrays are all the demo needs
    return encoded


def demo_cmd(
    rows: int = typer.Option(400_000, help="synthetic rows to generate (cached)"),
    seed: int = typer.Option(0),
    epochs: int = typer.Option(2),
    device: str = typer.Option("auto"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Train DeepFM on built-in synthetic data and print AUC, logloss and size."""
    from ctrzip.bench.sizes import format_size_report, size_report
    from ctrzip.run_config import ModelSection, RunConfig
    from ctrzip.workflow import train_run

    t0 = time.perf_counter()
    data = prepare_demo_data(rows, seed, progress)
    run = RunConfig(
        dataset=str(data),
        model=ModelSection("deepfm", {"embedding_dim": 16, "mlp": [200, 200, 200]}),
        train={
            "epochs": epochs,
            "batch_size": 4096,
            "lr": 1e-3,
            "embedding_l2": 1e-5,
            "device": device,
            "progress": progress,
            "seed": seed,
        },
    )
    result = train_run(run)
    test = result.metrics.get("test", {})
    rows_out: list[dict[str, Any]] = [
        {
            "model": "DeepFM (dense)",
            "test AUC": test.get("auc", float("nan")),
            "test logloss": test.get("logloss", float("nan")),
            "MB": result.sizes["total"]["mb"],
        }
    ]
    print_table("ctrzip demo: criteo-like synthetic data", rows_out)
    console.print(format_size_report(size_report(result.model)))
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s")
