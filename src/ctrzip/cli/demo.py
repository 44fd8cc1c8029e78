"""``ctrzip demo``: synthetic criteo-like data -> DeepFM -> compression rows, in minutes on a CPU."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer

from ctrzip.cli._common import checked_device, checked_min, console, print_table

MIN_DEMO_ROWS = 1_000


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
    compress_rows: bool = typer.Option(True, "--compress/--no-compress", help="add compressed rows"),
    device: str = typer.Option("auto"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Train DeepFM on built-in synthetic data, compress it (MEC, lowrank, budget) and compare.

    Every compressed model is fine-tuned one epoch at lr 1e-4, so the table also shows the
    dense model fine-tuned the same way (the honest control: spec/PROTOCOL.md).
    """
    from ctrzip.run_config import ModelSection, RunConfig
    from ctrzip.workflow import train_run

    checked_min(rows, MIN_DEMO_ROWS, "--rows")  # fewer leave valid/test splits too small to score
    checked_min(epochs, 1, "--epochs")
    checked_device(device)
    t0 = time.perf_counter()
    data_dir = prepare_demo_data(rows, seed, progress)
    run = RunConfig(
        dataset=str(data_dir),
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
    table = [_row("DeepFM (dense)", result.model, result.sizes, result.metrics["test"])]
    if compress_rows:
        table += _compressed_rows(result.model, str(data_dir), seed, device, progress)
    print_table("ctrzip demo: DeepFM on criteo-like synthetic data (test split)", table)
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s")


def _row(name: str, model: Any, sizes: dict[str, Any], test: dict[str, float], base_mb: float | None = None):
    mb = sizes["total"]["mb"]
    return {
        "model": name,
        "test AUC": test["auc"],
        "test logloss": test["logloss"],
        "MB": round(mb, 3),
        "x smaller": f"{(base_mb or mb) / mb:.1f}",
    }


def _compressed_rows(
    model: Any, data_dir: str, seed: int, device: str, progress: bool
) -> list[dict[str, Any]]:
    """Dense control, MEC, lowrank and budget rows, each from a copy of the trained model."""
    import copy

    from ctrzip.compression import compress
    from ctrzip.compression.budget import BudgetConfig
    from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
    from ctrzip.compression.mec.fields import dense_reason
    from ctrzip.compression.mec.method import MECConfig
    from ctrzip.compression.mec.stage1 import CodeLearningConfig
    from ctrzip.compression.sizes import size_report
    from ctrzip.data.dataset import EncodedDataset
    from ctrzip.errors import CompressionError
    from ctrzip.train.trainer import TrainConfig, Trainer, evaluate

    data = EncodedDataset.open(data_dir)
    base_mb = size_report(model)["total"]["mb"]
    ft_lr = 1e-4
    rows = []

    # Controls: the dense model given the same extra training as each compressed row
    # (mec: 1 fine-tune epoch; lowrank: 1 epoch after the MLP step + 1 after the embedding step).
    control = copy.deepcopy(model)
    for ep in (1, 2):
        Trainer(TrainConfig(epochs=1, lr=ft_lr, seed=seed + ep, device=device, progress=progress)).fit(
            control, data["train"], data["valid"]
        )
        test = evaluate(control, data["test"], device=device)
        rows.append(
            _row(f"DeepFM dense + {ep} ep fine-tune (control)", control, size_report(control), test, base_mb)
        )

    largest = max(f.vocab_size for f in data.schema.sparse_fields)
    # a toy --rows leaves fields of a few hundred ids: a few steps over them are enough
    learning = CodeLearningConfig(steps=100 if largest >= 2_000 else 10, batch_size=min(1024, largest))
    # K = 64, or smaller where a toy --rows leaves no field large enough for 64 codewords to pay off
    k = next(
        (k for k in (64, 32, 16) if dense_reason(largest, 16, 4, k, learning.layout, 0, True) is None), 16
    )
    mec_cfg = MECConfig(
        num_subspaces=4,
        codebook_size=k,
        min_vocab=min(2_000, max(2, largest // 2)),
        code_learning=learning,
        plugin_per_field=False,
        seed=seed,
        device=device,
    )
    try:
        mec = compress(copy.deepcopy(model), mec_cfg, data)
    except CompressionError as err:  # e.g. --rows too small for any field to shrink
        console.print(f"no MEC row: {err}")
    else:
        rows.append(
            _row(
                f"DeepFM + mec(M=4,K={k}) + 1 ep fine-tune",
                mec,
                size_report(mec),
                evaluate(mec, data["test"], device=device),
                base_mb,
            )
        )

    lr_cfg = LowRankConfig(
        rank=32, embedding=True, embedding_rank=4, lr=ft_lr, seed=seed, device=device, progress=progress
    )
    try:
        low = compress(copy.deepcopy(model), lr_cfg, data)
    except CompressionError as err:
        console.print(f"no lowrank row: {err}")
    else:
        rows.append(
            _row(
                "DeepFM + lowrank(mlp 32, emb 16->4) + 2x1 ep fine-tune",
                low,
                size_report(low),
                evaluate(low, data["test"], device=device),
                base_mb,
            )
        )

    # whole-model compression to a quarter of the bytes, no fine-tune (plug-in)
    budget_cfg = BudgetConfig(mb=base_mb / 4, calib_rows=50_000, seed=seed, device=device)
    try:
        bud = compress(copy.deepcopy(model), budget_cfg, data)
    except CompressionError as err:
        console.print(f"no budget row: {err}")
    else:
        test = evaluate(bud, data["test"], device=device)
        rows.append(
            _row(f"DeepFM + budget({base_mb / 4:.2f} MB), no fine-tune", bud, size_report(bud), test, base_mb)
        )
    return rows
