"""Export to ONNX with ``torch.onnx``'s dynamo exporter and run the result with onnxruntime.

The graph has inputs ``sparse`` (int64 ``[batch, S]``) and ``dense`` (float32 ``[batch, Dn]``)
and output ``probability`` (float32 ``[batch]``), ``batch`` dynamic. Needs the ``export``
extra: ``pip install onnx onnxruntime onnxscript`` (``pip install 'ctrzip[export]'``).
"""

from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ctrzip.export.plain import ExportError

INPUTS = ("sparse", "dense")
OUTPUT = "probability"
MIN_OPSET = 18  # the dynamo exporter's own operator set; lower ones need a version conversion


def require(name: str) -> ModuleType:
    """Import ``name`` or raise ``ExportError`` saying how to install the export extra."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ExportError(
            f"ONNX export needs the Python package {name!r} ({err}); install the export extra: "
            "pip install onnx onnxruntime onnxscript"
        ) from None


def export_onnx(
    module: torch.nn.Module, example: tuple[Tensor, Tensor], path: Path, opset: int | None
) -> int:
    """Trace ``module(sparse, dense)`` on ``example`` and write ``path`` (checked by ``onnx.checker``).

    Weights go inside the file up to protobuf's 2 GB limit, beyond it into ``<path>.data``
    beside it (the exporter decides). The graph is written unoptimized: the exporter's constant
    folding would store int8 weights times their scales as float32 (4x the bytes), and
    onnxruntime optimizes the graph (folding included) in memory when it loads it. Returns the
    opset of the written model.

    Raises:
        ExportError: a package is missing, ``opset`` < 18, the exporter fails (its first line
            is quoted), or the checker rejects the model.
    """
    require("onnxscript")
    onnx = require("onnx")
    if opset is not None and opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: the dynamo ONNX exporter writes opset {MIN_OPSET} or newer")
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), _quiet_exporter_logs():
        warnings.simplefilter("ignore")  # exporter chatter (axis renames, deprecations)
        try:
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                dynamic_shapes=({0: batch}, {0: batch}),
                opset_version=opset,
                verbose=False,
                # no constant folding in the file: it would turn int8 weights times their scales
                # into float32 constants (4x the bytes); onnxruntime folds at load, in memory
                optimize=False,
            )
            assert program is not None  # dynamo=True always returns the program
            _drop_node_metadata(program.model)
            program.save(str(path))
        except Exception as err:  # the exporter's own error types vary across torch versions
            raise ExportError(f"torch.onnx export failed: {_first_line(err)}") from err
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:
        raise ExportError(f"{path}: onnx.checker rejects the exported model: {_first_line(err)}") from err
    written = next(
        (
            o.version
            for o in onnx.load(str(path), load_external_data=False).opset_import
            if o.domain in ("", "ai.onnx")
        ),
        None,
    )
    if opset is not None and written != opset:
        raise ExportError(f"--opset {opset}: the exporter wrote opset {written}; choose another opset")
    return int(written) if written is not None else -1


class OnnxRunner:
    """An onnxruntime CPU session over an exported file: ``runner(sparse, dense) -> [B]`` float32."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def numpy(self, sparse: np.ndarray, dense: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {"sparse": sparse, "dense": dense})[0]

    def __call__(self, sparse: Tensor, dense: Tensor) -> Tensor:
        out = self.numpy(sparse.to(torch.int64).numpy(), dense.to(torch.float32).numpy())
        return torch.from_numpy(out)


def versions() -> dict[str, Any]:
    """Versions of the ONNX packages in use (for the parity record)."""
    return {
        name: getattr(require(name), "__version__", "?") for name in ("onnx", "onnxruntime", "onnxscript")
    }


def _drop_node_metadata(model: Any) -> None:
    """Clear each node's ``metadata_props``: the exporter's per-node debugging record (source
    stack traces with this machine's paths) is more than half of an unoptimized file."""
    graphs = [model.graph, *getattr(model, "functions", {}).values()]
    for graph in graphs:
        for node in graph:
            props = getattr(node, "metadata_props", None)
            if props is not None:
                props.clear()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


class _quiet_exporter_logs:
    """Raise the exporter's loggers to ERROR while exporting (it logs missing torchvision ops)."""

    names = ("torch.onnx", "onnxscript")

    def __enter__(self) -> None:
        self._levels = {n: logging.getLogger(n).level for n in self.names}
        for n in self.names:
            logging.getLogger(n).setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        for n, level in self._levels.items():
            logging.getLogger(n).setLevel(level)
