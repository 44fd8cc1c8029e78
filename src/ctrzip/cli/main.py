"""``ctrzip`` command line: YAML -> dataclasses -> library calls. Sub-commands live in sibling modules."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train and compress CTR models.")

# Each sub-module exposes ``register(app)`` adding its commands; missing ones are skipped
# only while they are being built (ImportError of the module itself, never of its deps).
for _name in ("data", "train", "compress", "demo", "export"):
    try:
        _mod = importlib.import_module(f"ctrzip.cli.{_name}")
    except ModuleNotFoundError as err:
        if err.name != f"ctrzip.cli.{_name}":
            raise
        continue
    _mod.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
