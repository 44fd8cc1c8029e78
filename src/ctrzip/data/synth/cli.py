"""``ctrzip data synth``: the generator on the command line."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from ctrzip.data.synth.driver import generate
from ctrzip.data.synth.layouts import LAYOUTS
from ctrzip.data.synth.teacher import TeacherConfig


def register_synth(data_app: typer.Typer) -> None:
    """Add the ``synth`` command to the ``ctrzip data`` sub-app."""

    @data_app.command("synth")
    def synth(
        kind: Annotated[str, typer.Argument(help=f"dataset kind: {' | '.join(LAYOUTS)}")],
        out: Annotated[Path, typer.Option("--out", help="raw file to write (Criteo TSV / Avazu CSV)")],
        rows: Annotated[int, typer.Option("--rows", min=1, help="data rows to write")] = 1_000_000,
        seed: Annotated[int, typer.Option("--seed", help="seeds tokens, teacher and every chunk")] = 0,
        workers: Annotated[int, typer.Option("--workers", min=1, help="generator processes")] = 1,
        chunk_rows: Annotated[int, typer.Option("--chunk-rows", min=1, help="rows per chunk")] = 100_000,
        positive_rate: Annotated[
            float | None,
            typer.Option("--positive-rate", help="target click rate (default: kind's real rate)"),
        ] = None,
        popularity: Annotated[
            str, typer.Option("--popularity", help="scaled (miniature of the real data) | full (subsample)")
        ] = "scaled",
        progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="replace an existing --out file")
        ] = False,
    ) -> None:
        """Write a synthetic criteo-like / avazu-like raw file with labels from a hidden teacher."""
        if out.exists() and not out.is_file():  # the file is written beside and renamed over --out
            raise typer.BadParameter(
                f"{out} exists and is not a regular file; choose a file path", param_hint="--out"
            )
        if out.exists() and not overwrite:
            raise typer.BadParameter(f"{out} exists; pass --overwrite to replace it", param_hint="--out")
        if kind not in LAYOUTS:
            raise typer.BadParameter(
                f"unknown kind {kind!r}; choose one of {sorted(LAYOUTS)}", param_hint="KIND"
            )
        if popularity not in ("scaled", "full"):
            raise typer.BadParameter("must be 'scaled' or 'full'", param_hint="--popularity")
        try:
            report = generate(
                kind,
                out,
                rows,
                seed=seed,
                workers=workers,
                chunk_rows=chunk_rows,
                progress=progress,
                teacher=TeacherConfig(positive_rate=positive_rate),
                popularity=popularity,
            )
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
        typer.echo(json.dumps(asdict(report)))
