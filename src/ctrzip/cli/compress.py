"""``ctrzip compress --method mec|lowrank|... --model DIR --data DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ctrzip.cli._common import ConfigError, console, fail, print_table, read_config


def register(app: typer.Typer) -> None:
    app.command("compress")(compress_cmd)


def compress_cmd(
    method: str = typer.Option(..., "--method", help="registered method key: mec, pq, lowrank, svd, tt, ..."),
    model: Path = typer.Option(..., "--model", "-m", help="trained model artifact folder"),
    data: Path = typer.Option(..., "--data", "-d", help="encoded dataset folder"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for the compressed artifact"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="method config YAML"),  # noqa: UP045
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override, e.g. num_subspaces=4"),  # noqa: UP045
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing artifact at --out"),
) -> None:
    """Compress a trained model with a method, evaluate it and save the compressed artifact.

    --out must not exist yet (or be empty); an existing artifact there (the --model itself
    included) is replaced only with --overwrite.
    """
    from ctrzip.compression import METHODS, compress
    from ctrzip.compression.sizes import format_size_report, size_report
    from ctrzip.config import from_dict
    from ctrzip.data.dataset import EncodedDataset
    from ctrzip.export import ArtifactError, check_destination, load, save
    from ctrzip.train.trainer import evaluate

    if not overwrite and out.resolve() == model.resolve():
        raise fail(
            f"--out {out} is the --model artifact; pass --overwrite to replace the trained model "
            "with the compressed one, or choose another --out"
        )
    try:
        check_destination(out, overwrite)  # before any work: never replace an artifact unasked
        cls = METHODS.get(method)
        cfg = from_dict(cls.config_class, read_config(config, set_), source=str(config) if config else method)
        net = load(model)
        ds = EncodedDataset.open(data)
    except (ConfigError, KeyError, ArtifactError, FileNotFoundError) as err:
        raise fail(str(err)) from None
    before = size_report(net)
    metrics_before = evaluate(net, ds["test"]) if "test" in ds.splits else {}
    compress(net, cfg, ds)
    after = size_report(net)
    metrics_after = evaluate(net, ds["test"]) if "test" in ds.splits else {}
    rows = [{"model": "original", **metrics_before}, {"model": f"+ {method}", **metrics_after}]
    print_table("test metrics", rows)
    console.print(format_size_report(after))
    ratio = before["total"]["bytes"] / max(1, after["total"]["bytes"])
    console.print(f"total size ratio vs original: {ratio:.1f}x")
    save(out, net, overwrite=overwrite)  # the --model was read into memory: replacing it is safe
    console.print(f"saved compressed artifact to {out}")
