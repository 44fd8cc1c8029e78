"""``ctrzip bench --suite NAME ...`` (the benchmark grid, resumable) and ``ctrzip report DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ctrzip import distributed as dist
from ctrzip.bench.suite import SUITES
from ctrzip.cli._common import checked_device, console
from ctrzip.cli._distributed import torchrun_group
from ctrzip.config import ConfigError


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
    app.command("report")(report_cmd)


def _models(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise ConfigError("--models: give model names separated by commas, e.g. deepfm,pnn")
    return names


def bench_cmd(
    suite: str = typer.Option(..., "--suite", help=f"{', '.join(SUITES)}, all, or a suite YAML path"),
    data: Path = typer.Option(..., "--data", "-d", help="encoded dataset folder (train, valid, test)"),
    models: str = typer.Option("deepfm", "--models", help="comma-separated, e.g. deepfm,pnn"),
    seeds: int = typer.Option(1, "--seeds", help="seeds 0..N-1 (>= 3 for p-values)"),
    out: Path = typer.Option(..., "--out", "-o", help="result folder (results.jsonl, dense/, report)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="dense epochs (default: suite's)"),  # noqa: UP045
    device: str = typer.Option("auto", "--device", help="training/method device; timing is on CPU"),
    tag: Optional[str] = typer.Option(None, "--tag", help="data label in each record (default: folder name)"),  # noqa: UP045
    report: bool = typer.Option(True, "--report/--no-report", help="write the report when done"),
) -> None:
    """Run a benchmark suite: every (model, cell, seed) not yet in OUT/results.jsonl.

    The dense model of each (model, seed) is trained once and cached in OUT/dense; each cell
    applies its method to a copy. Rerun the same command to resume an interrupted run. Under
    ``torchrun --nproc-per-node N`` rank 0 alone writes results, cache and report.
    """
    from ctrzip.bench.runner import run_bench
    from ctrzip.bench.suite import load_suites

    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    checked_device(device)
    suites = load_suites(suite)
    with torchrun_group(device):  # under torchrun: passes shared out, rank 0 writes
        path = run_bench(
            suites,
            data,
            _models(models),
            list(range(seeds)),
            out,
            epochs=epochs,
            device=device,
            tag=tag,
            say=console.print,
        )
        if report and dist.is_main():
            _report(path.parent, path.parent)


def report_cmd(
    results: Path = typer.Argument(..., help="a ctrzip bench --out folder or a results .jsonl file"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="report folder (default: beside results)"),  # noqa: UP045
) -> None:
    """Write report.md and a self-contained report.html (plots embedded) from bench results."""
    _report(results, out)


def _report(results: Path, out: Path | None) -> None:
    from ctrzip.bench.report import write_report

    md, page = write_report(results, out)
    console.print(f"report: {page} (and {md})")
