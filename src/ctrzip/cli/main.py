"""``ctrzip`` command line: YAML -> dataclasses -> library calls. Sub-commands live in sibling modules.

Errors a user can cause (:class:`ctrzip.errors.UserError`, and ``OSError`` such as a missing
file or a full disk) are reported here, once for every command, as one ``error:`` line with
exit code 2. Any other exception is a bug and keeps its traceback; ``ctrzip --debug ...``
(or ``CTRZIP_DEBUG=1``) shows the traceback for user errors too.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from ctrzip.cli._common import error_line
from ctrzip.errors import UserError


def os_error_message(err: OSError) -> str:
    """``path: reason`` for an ``OSError`` (disk full, permission denied, missing file)."""
    reason = err.strerror or str(err) or type(err).__name__
    names = [str(n) for n in (err.filename, err.filename2) if n is not None]
    return f"{' -> '.join(names)}: {reason}" if names else reason


def _is_click_error(err: BaseException) -> bool:
    """A usage error of the command-line parser (missing option, bad value): typer vendors
    click, so its exception classes are recognised by their interface, not imported."""
    return hasattr(err, "format_message") and isinstance(getattr(err, "exit_code", None), int)


class CtrzipGroup(TyperGroup):
    """The root command group: turns user errors into one ``error:`` line and exit code 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """Parser errors (unknown option, missing or invalid value) as one ``error:`` line too."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except Exception as err:
            if not _is_click_error(err) or isinstance(err, typer.Exit):
                raise
            if type(err).__name__ != "NoArgsIsHelpError":  # that one has printed the help
                ctx = getattr(err, "ctx", None)
                hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                error_line(f"{err.format_message()}{hint}")  # type: ignore[attr-defined]
            sys.exit(err.exit_code)  # type: ignore[attr-defined]
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as err:
            if ctx.params.get("debug"):
                raise
            error_line(str(err))
        except OSError as err:
            if ctx.params.get("debug"):
                raise
            error_line(os_error_message(err))
        raise typer.Exit(code=2)


app = typer.Typer(
    cls=CtrzipGroup, add_completion=False, no_args_is_help=True, help="Train and compress CTR models."
)


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", envvar="CTRZIP_DEBUG", help="show tracebacks for user errors too"
    ),
) -> None:
    """Train and compress CTR models."""


# Each sub-module exposes ``register(app)`` adding its commands; missing ones are skipped
# only while they are being built (ImportError of the module itself, never of its deps).
for _name in ("data", "train", "compress", "demo", "export", "predict", "serve", "bench"):
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
