"""``ctrzip demo``: synthetic criteo-like data -> DeepFM -> compression rows, in minutes on a CPU."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

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
    report_dir: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--report-dir", help="where the run's results and report go (default: in the cache)"
    ),
) -> None:
    """Train DeepFM on built-in synthetic data, compress it (MEC, lowrank, budget) and compare.

    Every row shows the measured size and the ratio projected to Criteo's real vocabulary
    (the tables at Criteo's full vocabulary, the network as stored; the AUC is the one measured
    here): at demo scale the network dominates the measured size, at Criteo's the tables do.
    MEC and lowrank are fine-tuned one epoch at lr 1e-4 after each step, so the table also
    shows the dense model fine-tuned the same way (the honest control: spec/PROTOCOL.md). The
    run's results (one ``ctrzip bench`` record per row) and its report (``ctrzip report``) are
    written to ``--report-dir``, replacing an earlier demo's.
    """
    from ctrzip.bench.provenance import provenance
    from ctrzip.bench.records import append_record
    from ctrzip.bench.report import write_report
    from ctrzip.bench.runner import (
        DenseModel,
        cell_record,
        projected_bytes,
        projection_vocab,
        size_fields,
    )
    from ctrzip.bench.suite import TimingSection
    from ctrzip.data.dataset import EncodedDataset
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
    t_train = time.perf_counter()
    result = train_run(run)
    train_s = time.perf_counter() - t_train
    data = EncodedDataset.open(data_dir)
    vocab = projection_vocab(data)
    model = result.model.eval()
    dense = DenseModel(
        model,
        train_s,
        epochs,
        {"test_auc": result.metrics["test"]["auc"], "test_logloss": result.metrics["test"]["logloss"]},
        size_fields(model),
        projected_bytes(model, vocab),
    )
    measured: list[tuple[str, Any, float, str | None]] = [("DeepFM (dense)", model, 0.0, None)]
    if compress_rows:
        measured += _compressed_rows(model, data, seed, device, progress)
    out = report_dir or cache_dir() / f"demo-report-{rows}-s{seed}"
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    results.unlink(missing_ok=True)  # this run's rows only
    meta = provenance()
    timing = TimingSection(rounds=1)  # one interleaved round: the demo keeps its time budget
    table, notes = [], []
    for label, m, seconds, control in measured:
        # ctrzip bench's measurement of a cell (one code path measures)
        rec = cell_record(
            label=label,
            model=m,
            dense=dense,
            data=data,
            device=device,
            timing=timing,
            vocab=vocab,
            seconds=seconds,
            splits=["test"],
        )
        where = {"data": "demo criteo-like", "model": "deepfm", "suite": "demo", "seed": seed}
        paired = {"control": control} if control else {}
        append_record(results, {**where, **rec, **paired, **meta})
        table.append(_row(rec))
        if "projection_error" in rec:
            notes.append(f"{label}: no Criteo projection ({rec['projection_error']})")
    print_table("ctrzip demo: DeepFM on criteo-like synthetic data (test split)", table)
    ids = f"{sum(vocab[1].values()):,} ids" if vocab else "not these fields: n/a"
    console.print(
        "MB: stored tensors measured here (2^20 bytes). Criteo-projected: dense bytes / this row's bytes "
        f"with every table at Criteo's real vocabulary ({ids}) and the network as stored."
    )
    for note in notes:
        console.print(note)
    _, page = write_report(results, out)
    console.print(f"report of this run: {page}")
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s")


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    proj = rec.get("projected_ratio")
    return {
        "model": rec["method"],
        "test AUC": rec["test_auc"],
        "logloss": rec["test_logloss"],
        "MB": round(rec["bytes"] / 2**20, 3),
        "x smaller": f"{rec['ratio']:.1f}",
        "Criteo-\nprojected\nx smaller": "n/a" if proj is None else f"{proj:.1f}",
    }


def _compressed_rows(
    model: Any, data: Any, seed: int, device: str, progress: bool
) -> list[tuple[str, Any, float, str | None]]:
    """Dense controls, MEC, lowrank and budget: ``(label, model, seconds)``, each from a copy
    of the trained model (a method that refuses is named and left out)."""
    import copy

    from ctrzip.compression import compress
    from ctrzip.compression.budget import BudgetConfig
    from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
    from ctrzip.compression.mec.fields import dense_reason
    from ctrzip.compression.mec.method import MECConfig
    from ctrzip.compression.mec.stage1 import CodeLearningConfig
    from ctrzip.errors import CompressionError
    from ctrzip.train.trainer import TrainConfig, Trainer

    ft_lr = 1e-4
    rows: list[tuple[str, Any, float]] = []

    # Controls: the dense model given the same extra training as each compressed row
    # (mec: 1 fine-tune epoch; lowrank: 1 epoch after the MLP step + 1 after the embedding step).
    control = copy.deepcopy(model)
    t0 = time.perf_counter()
    for ep in (1, 2):
        Trainer(TrainConfig(epochs=1, lr=ft_lr, seed=seed + ep, device=device, progress=progress)).fit(
            control, data["train"], data["valid"]
        )
        label = f"DeepFM dense + {ep} ep fine-tune (control)"
        rows.append((label, copy.deepcopy(control), time.perf_counter() - t0, None))

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
    lr_cfg = LowRankConfig(
        rank=32, embedding=True, embedding_rank=4, lr=ft_lr, seed=seed, device=device, progress=progress
    )
    # whole-model compression: the smallest plan within 0.001 validation AUC, no fine-tune
    budget_cfg = BudgetConfig(max_auc_loss=0.001, calib_rows=50_000, seed=seed, device=device)
    c1, c2 = rows[0][0], rows[1][0]  # the controls of one and of two fine-tune epochs
    for name, label, cfg, control in (
        ("MEC", f"DeepFM + mec(M=4,K={k}) + 1 ep fine-tune", mec_cfg, c1),
        ("lowrank", "DeepFM + lowrank(mlp 32, emb 16->4) + 2x1 ep fine-tune", lr_cfg, c2),
        ("budget", "DeepFM + budget(max AUC loss 0.001), no fine-tune", budget_cfg, None),
    ):
        t0 = time.perf_counter()
        try:
            done = compress(copy.deepcopy(model), cfg, data)
        except CompressionError as err:  # e.g. --rows too small for any field to shrink
            console.print(f"no {name} row: {err}")
        else:
            rows.append((label, done, time.perf_counter() - t0, control))
    return rows
