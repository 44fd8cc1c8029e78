"""``export_model``: write an ONNX or ``torch.export`` file of a model, checked against PyTorch.

Every export runs the written file (onnxruntime for ONNX, ``torch.export.load`` for the other)
and the PyTorch model on the same batch (a real one from ``data`` when given, else random
valid ids) and on its first row alone; if any probability differs by ``TOLERANCE`` or more,
nothing is written and ``ExportError`` names the difference. The figures are returned and
saved beside the export as ``<out>.parity.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ctrzip.data.batch import Batch
from ctrzip.export.graph import ParityBatch, data_batch, export_module, random_batch
from ctrzip.export.plain import ExportError
from ctrzip.models.base import CTRModel

FORMATS = ("onnx", "torch-export")
TOLERANCE = 1e-5  # max abs difference of probabilities, exported vs PyTorch
_TRACE_ROWS = 3  # tracing batch: not 0 or 1, which torch.export would specialize on


def parity_path(out: str | Path) -> Path:
    """Where the parity figures of export ``out`` are saved: ``<out>.parity.json``."""
    out = Path(out)
    return out.with_name(out.name + ".parity.json")


def export_model(
    model: CTRModel | str | Path,
    out: str | Path,
    format: str = "onnx",  # noqa: A002  (the CLI option's name)
    *,
    opset: int | None = None,
    overwrite: bool = False,
    data: str | Path | None = None,
    split: str = "test",
    rows: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Export ``model`` (a ``CTRModel`` or an artifact folder) to file ``out`` and check parity.

    Args:
        model: the model, or the path of a saved artifact (loaded and verified).
        out: the file to write (``.onnx`` / ``.pt2`` by convention); its folder is created.
        format: ``onnx`` or ``torch-export``.
        opset: ONNX opset (>= 18; default: the exporter's); refused for ``torch-export``.
        overwrite: replace an existing ``out``.
        data: encoded dataset folder whose ``split`` gives the parity batch (default: random
            valid ids, seeded by ``seed``).
        rows: rows of the parity batch (>= 1); a batch of one is always checked too.

    The model is copied while exporting (export-friendly forms replace modules in the copy
    only, see ``ctrzip.export.plain``), so peak memory is about twice the model's.

    Returns:
        The parity record also saved to ``parity_path(out)``: format, file, bytes, opset,
        versions, the modules given export-friendly forms, and per checked batch its rows,
        source and ``max_abs_diff``.

    Raises:
        ExportError: an unknown ``format``, an option the format cannot take, ``out`` existing
            without ``overwrite`` (or being a folder), bad ``data``, an exporter failure, or a
            parity difference >= ``TOLERANCE`` (the message gives the max difference).
        ArtifactError: ``model`` is a path that does not load.
    """
    if format not in FORMATS:
        raise ExportError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    if opset is not None and format != "onnx":
        raise ExportError(f"--opset {opset}: only the onnx format has an opset")
    if rows < 1:
        raise ExportError(f"--rows {rows}: the parity batch needs at least 1 row")
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"--out {out}: is a folder; give the file to write (e.g. {out / 'model.onnx'})")
    if out.exists() and not overwrite:
        raise ExportError(
            f"--out {out}: already exists; pass --overwrite to replace it, or choose another path"
        )
    if not isinstance(model, CTRModel):
        from ctrzip.export.artifact import load

        model = load(model)
    was_training = model.training
    model.eval()  # dropout off for the parity runs; the caller's mode comes back below
    try:
        batch = (  # first: bad --data fails before any work
            data_batch(model.schema, data, split, rows)
            if data is not None
            else random_batch(model.schema, rows, seed)
        )
        module, swapped = export_module(model)
        trace = random_batch(model.schema, _TRACE_ROWS, seed + 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        try:
            record = _write_and_check(
                model, module, (trace.sparse, trace.dense), batch, tmp / out.name, format, opset
            )
            for f in tmp.iterdir():  # the file, and ONNX external data beside it (``<out>.data``)
                os.replace(f, out.parent / f.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        model.train(was_training)
    record = {
        "format": format,
        "file": str(out),
        "file_bytes": out.stat().st_size,
        **record,
        "model": model.registry_key,
        "compression": [step.get("method") for step in getattr(model, "compression_log", [])],
        "plain_forms": swapped,
        "tolerance": TOLERANCE,
        "torch_version": torch.__version__,
    }
    parity_path(out).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _write_and_check(
    model: CTRModel,
    module: torch.nn.Module,
    example: tuple[Tensor, Tensor],
    batch: ParityBatch,
    path: Path,
    format: str,  # noqa: A002
    opset: int | None,
) -> dict[str, Any]:
    record: dict[str, Any] = {}
    run: Callable[[Tensor, Tensor], Tensor]
    if format == "onnx":
        from ctrzip.export.onnx import OnnxRunner, export_onnx, versions

        record["opset"] = export_onnx(module, example, path, opset)
        record.update(versions())
        run = OnnxRunner(path)
    else:
        from ctrzip.export.torch_export import ProgramRunner, export_program

        export_program(module, example, path)
        run = ProgramRunner(path)
    checks = []
    for part in (batch, batch.head(1)):
        diff = max_abs_diff(model, run, part)
        checks.append({"rows": int(part.sparse.shape[0]), "source": part.source, "max_abs_diff": diff})
        if not diff < TOLERANCE:  # NaN fails too
            raise ExportError(
                f"{format} export of {model.registry_key} fails its parity check: max abs difference of "
                f"probabilities {diff:.3g} (>= {TOLERANCE:g}) vs PyTorch on {checks[-1]['rows']} rows "
                f"({part.source}); nothing was written"
            )
    record["parity"] = checks
    return record


@torch.no_grad()
def max_abs_diff(model: CTRModel, run: Callable[[Tensor, Tensor], Tensor], batch: ParityBatch) -> float:
    """Max |exported - PyTorch| of the probabilities on ``batch`` (NaN if either gives NaN)."""
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    label = torch.zeros(batch.sparse.shape[0])
    ref = model.predict(Batch(batch.sparse, batch.dense, label).to(device)).float().cpu()
    got = run(batch.sparse, batch.dense).float()
    if got.shape != ref.shape:
        raise ExportError(f"the exported model returns shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
    return float((got.double() - ref.double()).abs().max())
