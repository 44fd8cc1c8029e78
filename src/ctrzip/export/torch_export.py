"""Export with ``torch.export`` (a ``.pt2`` ``ExportedProgram``) and run it back.

The program takes ``(sparse [batch, S] int64, dense [batch, Dn] float32)`` and returns
probabilities ``[batch]`` float32, ``batch`` dynamic; load it with
``torch.export.load(path).module()``, no ctrzip import needed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor

from ctrzip.export.plain import ExportError


def export_program(module: torch.nn.Module, example: tuple[Tensor, Tensor], path: Path) -> None:
    """Trace ``module(sparse, dense)`` on ``example`` with a dynamic batch and save it to ``path``.

    Raises:
        ExportError: the tracer fails (its first line quoted).
    """
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(module, example, dynamic_shapes=({0: batch}, {0: batch}))
        except Exception as err:  # torch's tracer raises many error types
            text = str(err).strip()
            first = text.splitlines()[0] if text else ""
            raise ExportError(f"torch.export failed: {type(err).__name__}: {first}") from err
        with path.open("wb") as f:  # a file object: torch's loader wants a ``.pt2`` name otherwise
            torch.export.save(program, f)


class ProgramRunner:
    """A loaded ``.pt2`` program: ``runner(sparse, dense) -> [B]`` float32."""

    def __init__(self, path: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with path.open("rb") as f:
                self.module = torch.export.load(f).module()

    @torch.no_grad()
    def __call__(self, sparse: Tensor, dense: Tensor) -> Tensor:
        return self.module(sparse.to(torch.int64), dense.to(torch.float32))
