"""Score raw rows with an artifact: ``Predictor`` (in memory) and ``predict`` (files, streamed).

A file is read in blocks (``block_mb``), each block encoded by the artifact's ``RowEncoder`` and
scored in batches of ``batch_rows``, and the probabilities are appended to the output as they
come: memory is bounded by a block, whatever the input's size, and rows keep their input order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from ctrzip.data.dataset import SplitArrays
from ctrzip.data.progress import EncodeProgress
from ctrzip.data.readers import BadRows, DataFormatError
from ctrzip.models.base import CTRModel
from ctrzip.serving.output import PredictionWriter
from ctrzip.serving.rows import EncodedRows, RowEncoder
from ctrzip.train.evaluation import predict as predict_arrays

Policy = Literal["error", "skip"]


@dataclass
class PredictReport:
    """What ``predict`` wrote: rows scored, bad rows (policy, count, ``file:line: reason``
    examples), time and throughput."""

    input: str
    output: str
    rows: int
    bad_rows: dict[str, Any]
    seconds: float
    rows_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Predictor:
    """A model and its raw-row encoder: raw rows in, click probabilities out.

    Args:
        model: the (possibly compressed) model.
        encoder: the encoder of the data it was trained on.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``...
        batch_rows: rows per forward pass.
    """

    def __init__(
        self, model: CTRModel, encoder: RowEncoder, *, device: str = "auto", batch_rows: int = 65536
    ) -> None:
        from ctrzip.data.loader import resolve_device

        mine = [(f.name, f.kind, f.vocab_size, f.max_len) for f in model.schema.fields]
        theirs = [(f.name, f.kind, f.vocab_size, f.max_len) for f in encoder.schema.fields]
        if mine != theirs:
            raise DataFormatError("the encoder's fields differ from the model's schema; use the model's own")
        if batch_rows < 1:
            raise DataFormatError(f"batch_rows must be >= 1, got {batch_rows}")
        self.model, self.encoder, self.batch_rows = model.eval(), encoder, batch_rows
        self.device = resolve_device(device)
        self.model.to(self.device)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", batch_rows: int = 65536) -> Predictor:
        """The artifact at ``path`` with its encoder (checksums verified).

        Raises:
            MissingEncoderError: the artifact carries no encoder (says how to add one).
            ArtifactError: a missing, corrupt or edited artifact, naming the file.
        """
        from ctrzip.export import load

        encoder = RowEncoder.from_artifact(path)  # first: the clearer error for an old artifact
        return cls(load(path), encoder, device=device, batch_rows=batch_rows)

    def score(self, rows: EncodedRows) -> np.ndarray:
        """float64 [n] probabilities of encoded rows (the evaluation loop's own ``predict``)."""
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float64)
        split = SplitArrays(rows.sparse, rows.dense, np.zeros(len(rows), dtype=np.float32))
        return predict_arrays(self.model, split, batch_size=self.batch_rows, device=self.device)

    def predict(
        self,
        data: pl.DataFrame | str | Path,
        *,
        on_bad_rows: Policy = "error",
        format: str | None = None,
    ) -> np.ndarray:
        """float64 [n] click probabilities of every row of a frame or raw file, in order.

        Args:
            data: a Polars frame with the raw columns (``encoder.columns``; values as in the
                raw files) or a raw file (``.csv``, ``.tsv``, ``.parquet``, the training format).
            on_bad_rows: ``error`` raises at the first bad row (naming it); ``skip`` gives NaN
                at its position.
            format: the raw format of a file (default: from its suffix).

        Raises:
            BadRowError: a bad row under ``error`` (``file:line: column ...``).
            DataFormatError: missing columns or file.
        """
        bad = BadRows(bad_row_policy(on_bad_rows))
        if isinstance(data, pl.DataFrame):
            parts = [self.encoder.encode_frame(data, bad, "frame")]
            total = len(data)
        else:
            parts = [rows for rows, _ in self.encoder.iter_file(data, bad, fmt=format)]
            total = sum(len(p) for p in parts) + bad.count
        out = np.full(total, np.nan)
        for p in parts:
            out[p.rows] = self.score(p)
        return out


def predict(
    model: str | Path | Predictor,
    data: pl.DataFrame | str | Path,
    output: str | Path | None = None,
    *,
    id_column: str | None = None,
    batch_rows: int = 65536,
    on_bad_rows: Policy = "error",
    device: str = "auto",
    format: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    block_mb: float = 8.0,
) -> np.ndarray | PredictReport:
    """Score raw rows with an artifact: ``ctrzip.predict("runs/m", "raw.csv", "preds.parquet")``.

    Without ``output`` the probabilities come back as float64 [n] (``Predictor.predict``).
    With it, ``data`` (a file) is streamed block by block into ``output`` (``.parquet`` or
    ``.csv``): columns ``id_column`` (as text, if given), ``row`` (0-based data row of the input,
    bad rows counted) and ``probability`` (float64), in input order; the file appears only when
    complete.

    Args:
        model: an artifact folder or a ``Predictor``.
        id_column: a raw column copied to the output beside each probability.
        batch_rows: rows per forward pass.
        on_bad_rows: ``error`` (raise naming file:line:column) or ``skip`` (counted, reported
            in ``PredictReport.bad_rows`` with ``file:line`` examples).
        device: ``auto``, ``cpu``, ``cuda``...
        format: raw format of ``data`` (default: from its suffix, else the training format).
        overwrite: replace an existing ``output``.
        progress: show rows and rows/s on stderr.
        block_mb: MiB of input read per block (memory is a few times this).

    Raises:
        MissingEncoderError, ArtifactError: see ``Predictor.load``.
        BadRowError: a bad row under ``error``.
        DataFormatError: missing input or columns, an unknown format, an existing output (without
            ``overwrite``) or one that is neither ``.parquet`` nor ``.csv``, an input with no
            usable row.
    """
    pred = (
        model if isinstance(model, Predictor) else Predictor.load(model, device=device, batch_rows=batch_rows)
    )
    if output is None:
        return pred.predict(data, on_bad_rows=on_bad_rows, format=format)
    if isinstance(data, pl.DataFrame):
        raise DataFormatError("predict to a file streams a raw file; pass the file's path (or no output)")
    return _predict_file(
        pred, Path(data), Path(output), id_column, on_bad_rows, format, overwrite, progress, block_mb
    )


def _predict_file(
    pred: Predictor,
    src: Path,
    dst: Path,
    id_column: str | None,
    on_bad_rows: Policy,
    fmt: str | None,
    overwrite: bool,
    progress: bool,
    block_mb: float,
) -> PredictReport:
    start = time.perf_counter()
    bad = BadRows(bad_row_policy(on_bad_rows))
    keep: Sequence[str] = (id_column,) if id_column else ()
    if not src.is_file():
        raise DataFormatError(f"{src}: input file not found")
    n = 0
    with (
        PredictionWriter(dst, id_column, overwrite) as out,
        EncodeProgress(progress, src.stat().st_size) as bar,
    ):
        for rows, nbytes in pred.encoder.iter_file(src, bad, fmt=fmt, keep=keep, block_mb=block_mb):
            out.write(rows.kept, rows.rows, pred.score(rows))
            n += len(rows)
            bar.advance(nbytes, len(rows))
        if n == 0:
            first = f" (all {bad.count} rows are bad; first: {bad.examples[0]})" if bad.count else ""
            raise DataFormatError(f"{src}: no rows to score{first}")
    seconds = time.perf_counter() - start
    return PredictReport(
        str(src), str(dst), n, bad.to_dict(), round(seconds, 3), round(n / max(seconds, 1e-9), 1)
    )


def bad_row_policy(value: str) -> Policy:
    """``error`` or ``skip`` (``raise`` is taken for ``error``)."""
    if value in ("error", "raise"):
        return "error"
    if value == "skip":
        return "skip"
    raise DataFormatError(f"on_bad_rows must be error or skip, got {value!r}")
