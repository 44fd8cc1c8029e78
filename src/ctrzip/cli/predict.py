"""``ctrzip predict --model DIR --input RAW --output PREDS``: score a raw file with an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ctrzip.cli._common import checked_device, checked_min, console


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)


def predict_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="artifact folder (from train or compress)"),
    input: Path = typer.Option(
        ..., "--input", "-i", help="raw rows: .csv, .tsv, .parquet or the training format"
    ),
    output: Path = typer.Option(..., "--output", "-o", help="predictions file: .parquet or .csv"),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="raw column copied to the output"),  # noqa: UP045
    batch_rows: int = typer.Option(65536, "--batch-rows", help="rows per forward pass"),
    on_bad_rows: str = typer.Option(
        "error", "--on-bad-rows", "--on-error", help="error (stop, naming file:line:column) or skip (count)"
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
    format: Optional[str] = typer.Option(  # noqa: UP045
        None, "--format", help="raw format (default: from the suffix, else the training format)"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --output"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show rows and rows/s"),
) -> None:
    """Score every row of a raw file with a saved model, in input order, with bounded memory.

    The artifact's own vocabularies and transforms encode the rows (unseen values -> OOV, empty
    -> missing), as training did. Output columns: [ID_COLUMN], row (0-based data row of the
    input), probability.
    """
    from ctrzip.serving.output import PredictionWriter
    from ctrzip.serving.predict import Predictor, PredictReport, bad_row_policy, predict

    policy = bad_row_policy(on_bad_rows)
    checked_min(batch_rows, 1, "--batch-rows")
    checked_device(device)
    PredictionWriter(output, id_column, overwrite)  # refuse a bad --output before any work
    pred = Predictor.load(model, device=device, batch_rows=batch_rows)
    report = predict(
        pred, input, output, id_column=id_column, on_bad_rows=policy, format=format,
        overwrite=overwrite, progress=progress,
    )  # fmt: skip
    assert isinstance(report, PredictReport)
    console.print(
        f"wrote {report.rows:,} probabilities to {output} in {report.seconds:.2f} s "
        f"({report.rows_per_s:,.0f} rows/s, device {pred.device})"
    )
    if report.bad_rows["count"]:
        examples = "; ".join(report.bad_rows["examples"][:3])
        console.print(f"skipped {report.bad_rows['count']:,} bad rows: {examples}")
