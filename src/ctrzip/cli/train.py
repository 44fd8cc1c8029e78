"""``ctrzip train`` and ``ctrzip evaluate``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from ctrzip.cli._common import (
    checked_device,
    checked_min,
    checked_schema,
    checked_split,
    console,
    print_table,
    read_config,
    saved_line,
)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)


def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="run YAML: dataset, model, train sections"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override, e.g. train.lr=1e-4"),  # noqa: UP045
    out: Optional[Path] = typer.Option(None, "--out", help="artifact folder (default: train.out_dir/model)"),  # noqa: UP045
    fresh: bool = typer.Option(
        False,
        "--fresh",
        help="start over even if train.out_dir holds a saved run (same as train.resume=false)",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="replace an existing artifact at the output folder"
    ),
) -> None:
    """Train a model from a run file, evaluate it on valid/test and save an artifact.

    A rerun resumes the run saved in train.out_dir ("resuming DIR from step N") only if it is the same run.

    Other settings, model or data stop it, naming what differs; --fresh starts over instead.

    Raising train.epochs or train.max_steps extends a saved run.

    An existing artifact is never replaced without --overwrite.

    Under torchrun (torchrun --nproc-per-node N -m ctrzip train ...) it trains with
    DistributedDataParallel: train.batch_size is the global batch; rank 0 alone prints and writes.
    """
    from ctrzip import distributed as dist
    from ctrzip.compression.sizes import format_size_report
    from ctrzip.errors import TrainingError
    from ctrzip.run_config import parse_run_config
    from ctrzip.train.train_config import TrainConfig
    from ctrzip.workflow import train_run

    run = parse_run_config(read_config(config, set_), source=str(config))
    if fresh:
        run.train["resume"] = False
    out_dir = run.train.get("out_dir")
    save_to = out or (Path(out_dir) / "model" if out_dir else None)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun rank 0 alone prints
    if save_to is None and main_rank:
        console.print("note: no artifact will be saved (set train.out_dir in the run file or pass --out)")
    timeout = run.train.get("dist_timeout_s", TrainConfig.dist_timeout_s)
    try:  # a rank lost while joining, evaluating or saving: one line, like one lost in training
        with dist.collective_failures("train.dist_timeout_s", timeout, TrainingError):
            result = train_run(run, save_to=save_to, overwrite=overwrite)
    finally:
        dist.shutdown()
    if not main_rank:
        return
    print_table("metrics", [{"split": k, **v} for k, v in result.metrics.items()])
    console.print(format_size_report(result.sizes))
    if result.artifact:
        console.print(saved_line("artifact", result.artifact))


def evaluate_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="artifact folder written by train/compress"),
    data: Path = typer.Option(..., "--data", "-d", help="encoded dataset folder"),
    split: str = typer.Option("test", help="split to evaluate"),
    batch_size: int = typer.Option(8192, help="rows per evaluation batch (>= 1)"),
    device: str = typer.Option("auto", help="auto (CUDA if available), cpu, cuda or cuda:N"),
) -> None:
    """Evaluate a saved model (AUC, logloss) and print its size."""
    from ctrzip.compression.sizes import format_size_report, size_report
    from ctrzip.data.dataset import EncodedDataset
    from ctrzip.export import load
    from ctrzip.train.trainer import evaluate

    checked_min(batch_size, 1, "--batch-size")
    checked_device(device)
    net = load(model)
    ds = EncodedDataset.open(data)
    checked_schema(net, ds, model, data)
    arrays = checked_split(ds, split, data)
    metrics = evaluate(net, arrays, batch_size=batch_size, device=device, name=f"{data}: {split} split")
    print_table(f"{model} on {data}:{split}", [metrics])
    console.print(format_size_report(size_report(net)))


def _message(err: Exception) -> str:
    """The error's text (a ``KeyError``'s without the quotes ``str`` adds)."""
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
