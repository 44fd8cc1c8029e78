"""``ctrzip export``: an artifact to ONNX or a ``torch.export`` program, parity-checked."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ctrzip.cli._common import console, print_table


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)


def export_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="artifact folder written by train/compress"),
    format: str = typer.Option(..., "--format", "-f", help="onnx or torch-export"),  # noqa: A002
    out: Path = typer.Option(..., "--out", "-o", help="file to write (e.g. model.onnx, model.pt2)"),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (>= 18; default: the exporter's)"),  # noqa: UP045
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out file"),
    data: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--data", "-d", help="encoded dataset whose rows feed the parity check (default: random ids)"
    ),
    split: str = typer.Option("test", help="split of --data for the parity check"),
    rows: int = typer.Option(256, help="rows of the parity batch (a batch of one is checked too)"),
) -> None:
    """Export a model (sparse ids [B, S] int64, dense [B, Dn] float32 -> probabilities [B]).

    The written file is run (onnxruntime / torch.export.load) against PyTorch on a batch and on
    one row; a max abs difference of 1e-5 or more fails the command and writes nothing.

    The parity figures are printed and saved to OUT.parity.json.
    """
    from ctrzip.export.exporter import export_model, parity_path

    record = export_model(
        model, out, format, opset=opset, overwrite=overwrite, data=data, split=split, rows=rows
    )
    for fqn, how in record["plain_forms"].items():
        console.print(f"export-friendly form: {fqn} {how}", soft_wrap=True)
    print_table(
        f"parity vs PyTorch (tolerance {record['tolerance']:g})",
        [
            {"rows": c["rows"], "max_abs_diff": f"{c['max_abs_diff']:.3g}", "batch": c["source"]}
            for c in record["parity"]
        ],
    )
    opset_note = f", opset {record['opset']}" if "opset" in record else ""
    # soft_wrap: paths stay on one line, whole and copyable
    console.print(f"saved {format} export to {out} ({record['file_bytes']:,} B{opset_note})", soft_wrap=True)
    console.print(f"saved parity figures to {parity_path(out)}", soft_wrap=True)
