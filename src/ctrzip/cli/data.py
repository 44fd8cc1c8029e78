"""``ctrzip data ...``: encode raw files into ctrzip's dataset layout, list built-in schemas."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ctrzip.cli._common import console, fail
from ctrzip.config import ConfigError
from ctrzip.data.config import builtin_names, load_dataset_config
from ctrzip.data.encode import Encoder
from ctrzip.errors import UserError

data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Encode and inspect datasets.")


@data_app.command("encode")
def encode(
    schema: str = typer.Option(..., "--schema", help="built-in schema (criteo, avazu) or a YAML file"),
    input: Path = typer.Option(..., "--input", help="raw file (the train file for split method 'files')"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    valid: Path | None = typer.Option(None, "--valid", help="validation file (split method 'files')"),
    test: Path | None = typer.Option(None, "--test", help="test file (split method 'files')"),
    overrides: list[str] = typer.Option([], "--set", help="override a schema key, e.g. split.seed=1"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show rows/s and ETA"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an encoded dataset already at --out"),
) -> None:
    """Encode raw data (Criteo TSV, Avazu CSV, CSV, parquet, libsvm) into DIR."""
    try:
        cfg = load_dataset_config(schema, overrides)
        if valid is not None or test is not None:
            if cfg.split.method != "files":
                if any(o.split("=", 1)[0].strip() in ("split", "split.method") for o in overrides):
                    raise ConfigError(
                        f"--set split.method={cfg.split.method} contradicts --valid/--test "
                        "(given files are the splits); drop one of them"
                    )
                console.print(
                    f"note: --valid/--test given: one input file per split (the schema's "
                    f"{cfg.split.method} split {cfg.split.ratios} is not used)"
                )
                cfg = load_dataset_config({**cfg.to_dict(), "split": {"method": "files"}})
            inputs: object = {"train": input, "valid": valid, "test": test}
        else:
            inputs = input
        if not overwrite and (out / "feature_map.json").exists():  # models trained on it need it
            raise fail(
                f"{out}: already holds an encoded dataset; pass --overwrite to replace it, or another --out"
            )
        report = Encoder(cfg).fit_encode(inputs, out, progress=progress)  # type: ignore[arg-type]
    except (UserError, ValueError, FileNotFoundError) as err:
        raise fail(str(err)) from None
    rows = ", ".join(f"{k} {v:,}" for k, v in report.rows.items())
    console.print(f"encoded {report.dataset} -> {report.out_dir}: {rows} ({report.rows_per_s:,.0f} rows/s)")
    if report.bad_rows["count"]:
        console.print(f"[yellow]skipped {report.bad_rows['count']:,} bad rows[/yellow], e.g.:")
        for line in report.bad_rows["examples"]:
            console.print(f"  {line}")
        for note in report.bad_rows["notes"]:
            console.print(f"[yellow]note:[/yellow] {note}")


@data_app.command("schemas")
def schemas() -> None:
    """List the built-in dataset schemas."""
    for name in builtin_names():
        cfg = load_dataset_config(name)
        console.print(f"{name}: format {cfg.format}, {len(cfg.features)} features, min_count {cfg.min_count}")


@data_app.command("show")
def show(dataset: Path = typer.Argument(..., help="an encoded dataset folder")) -> None:
    """Print an encoded dataset's fields, vocab sizes and metadata."""
    fmap = dataset / "feature_map.json"
    if not fmap.exists():
        raise fail(f"{dataset}: not an encoded dataset (no feature_map.json)")
    console.print_json(json.dumps(json.loads(fmap.read_text())))


def register(app: typer.Typer) -> None:
    """Add ``ctrzip data`` to the main app."""
    try:
        from ctrzip.data.synthetic import register_synth
    except ModuleNotFoundError as err:
        if err.name != "ctrzip.data.synthetic":
            raise
    else:
        register_synth(data_app)
    app.add_typer(data_app, name="data")
