"""Raw rows -> model inputs with an artifact's saved encoder, by the code path of ``data encode``.

Why not a second implementation: the values a model was trained on came out of
``ColumnPlan.apply`` (number parsing and range checks, Criteo buckets, timestamps, sequences)
and the vocabulary lookup ``category_lut``; scoring runs the very same functions, so a raw row
gets the ids it would get in the encoded dataset: a value outside the vocabulary -> the OOV id,
a missing one -> 0, dense values normalized with the fitted shift and scale.

Each block gets a fresh ``ColumnPlan`` (its provisional codes are per plan), so memory is
bounded by the block, not by the number of distinct values in a long input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ctrzip.data.columns import ColumnPlan
from ctrzip.data.config import DatasetConfig
from ctrzip.data.counts import category_lut, vocab_frame
from ctrzip.data.encode import Encoder, normalize_dense
from ctrzip.data.progress import prefetch
from ctrzip.data.readers import CRITEO_COLUMNS, BadRows, DataFormatError, DelimitedReader, RawTable, Reader
from ctrzip.data.readers import open_reader as _open_reader
from ctrzip.data.readers.text import read_first_line
from ctrzip.data.schema import FeatureSchema

FORMATS = ("criteo_tsv", "avazu_csv", "csv", "parquet", "libsvm")
_COMPRESSED = {".gz", ".bz2", ".xz", ".zst", ".zstd"}


@dataclass
class EncodedRows:
    """One block of raw rows as model inputs (bad rows removed, input order kept)."""

    sparse: np.ndarray  # int32 [n, S]
    dense: np.ndarray  # float32 [n, Dn]
    lines: np.ndarray  # int64 [n]: 1-based line of each row (row number for parquet, index for records)
    rows: np.ndarray  # int64 [n]: 0-based data-row index in the input (bad rows counted)
    kept: pl.DataFrame  # the pass-through columns asked for (e.g. an id), as strings, aligned

    def __len__(self) -> int:
        return len(self.rows)


class RowEncoder:
    """Encodes raw rows (files, data frames, JSON records) as the model's training data was.

    Args:
        encoder: a fitted ``Encoder`` (``ctrzip.export.load_encoder(artifact)``).
    """

    def __init__(self, encoder: Encoder) -> None:
        self.config: DatasetConfig = encoder.config
        self.schema: FeatureSchema = encoder.schema()
        # the vocabularies as lookup frames, built once (the Python lists are not kept)
        self._vocab = {
            f.name: vocab_frame(encoder.vocabs[f.name], pl.Int64 if f.type == "numeric" else pl.String)
            for f in self.config.features
            if not f.is_dense
        }
        dense = [f for f in self.config.features if f.is_dense]
        self._shift = np.array([encoder.normalizers[f.name]["shift"] for f in dense], dtype=np.float64)
        self._scale = np.array([encoder.normalizers[f.name]["scale"] for f in dense], dtype=np.float64)

    @classmethod
    def from_artifact(cls, path: str | Path) -> RowEncoder:
        """The encoder of artifact folder ``path`` (see ``ctrzip.export.load_encoder``)."""
        from ctrzip.export.encoder_files import load_encoder

        return cls(load_encoder(path))

    @property
    def columns(self) -> list[str]:
        """The raw columns a row must provide (each may be missing/empty), label excluded."""
        cols: list[str] = []
        for f in self.config.features:
            if f.column not in cols:
                cols.append(f.column)
        return cols

    # --- blocks ---------------------------------------------------------------------------
    def encode_table(
        self, table: RawTable, bad: BadRows, where: str, keep: Sequence[str] = ()
    ) -> EncodedRows:
        """Encode one block; bad rows go to ``bad`` (raised or counted, naming ``where``:line).

        Args:
            table: string columns ``self.columns`` (plus ``keep``); a label column is not needed.
            bad: the bad-row policy and tally.
            where: the file (or ``record``) named in bad-row messages.
            keep: columns passed through untouched, aligned with the kept rows.
        """
        label = self.config.label
        frame = table.frame.with_columns(pl.lit("0").alias(label))  # scoring needs no label
        plan = ColumnPlan(self.config)
        block = plan.apply(RawTable(frame, table.lines, table.rows, table.nbytes), bad, where)
        pos = np.searchsorted(table.rows, block.rows)  # rows kept by apply, in order
        sparse = np.empty_like(block.codes)
        for f in plan.sparse:  # the encoder's own code -> id tables (``Encoder._luts``)
            lut = category_lut(plan.values(f.name), self._vocab[f.name])
            cols = plan.slices[f.name]
            sparse[:, cols] = lut[block.codes[:, cols]]
        dense = normalize_dense(block.dense, self._shift, self._scale)
        kept = table.frame.select(list(keep))[pos] if keep else pl.DataFrame()
        out = EncodedRows(sparse, dense, table.lines[pos], block.rows, kept)
        broken = ~np.isfinite(dense).all(axis=1)
        return self._drop_overflow(out, block.dense, broken, bad, where) if broken.any() else out

    def _drop_overflow(
        self, out: EncodedRows, raw: np.ndarray, broken: np.ndarray, bad: BadRows, where: str
    ) -> EncodedRows:
        """Rows whose dense value normalizes beyond float32 (far outside the training range)."""
        names = [f.name for f in self.config.features if f.is_dense]
        reasons = []
        for r in np.flatnonzero(broken)[: bad.max_examples]:
            j = int(np.flatnonzero(~np.isfinite(out.dense[r]))[0])
            reasons.append(f"column {names[j]}: {raw[r, j]:g} normalizes beyond float32 (training range)")
        bad.add(where, out.lines[broken], reasons)
        ok = ~broken
        return EncodedRows(out.sparse[ok], out.dense[ok], out.lines[ok], out.rows[ok], out.kept.filter(ok))

    def encode_frame(self, frame: pl.DataFrame, bad: BadRows, where: str = "row") -> EncodedRows:
        """Encode an in-memory frame (any column types; cast to strings as a reader would).

        Raises:
            DataFormatError: a needed column is missing, naming it and ``where``.
        """
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise DataFormatError(f"{where}: missing columns {missing} (it has: {', '.join(frame.columns)})")
        text = frame.select(pl.col(c).cast(pl.String) for c in self.columns)
        n = len(text)
        return self.encode_table(RawTable(text, np.arange(1, n + 1), np.arange(n), 0), bad, where)

    # --- files ----------------------------------------------------------------------------
    def open_reader(self, path: str | Path, fmt: str | None = None, block_mb: float | None = None) -> Reader:
        """A reader of raw file ``path`` in format ``fmt`` (default: from its suffix, else the
        training format). A Criteo TSV without the label column (39 columns) is read too.

        Raises:
            DataFormatError: unknown format, or the file cannot be opened as that format.
        """
        path = Path(path)
        fmt = fmt or infer_format(path, self.config)
        if fmt not in FORMATS:
            raise DataFormatError(f"{path}: unknown format {fmt!r} (valid: {', '.join(FORMATS)})")
        sep = self.config.separator if self.config.format == "csv" else None
        if fmt == "csv" and sep is None and path.suffix.lower() == ".tsv":
            sep = "\t"
        changes: dict[str, object] = {"format": fmt, "separator": sep if fmt == "csv" else None}
        if block_mb is not None:
            changes["block_mb"] = min(self.config.block_mb, block_mb)
        if fmt == "parquet":
            changes["encoding"] = "utf-8"
        config = dataclasses.replace(self.config, **changes)
        if fmt == "criteo_tsv" and _tab_fields(path) == len(CRITEO_COLUMNS) - 1:
            block = int(config.block_mb * (1 << 20))
            return DelimitedReader(path, "\t", CRITEO_COLUMNS[1:], '"', block, config.encoding)
        return _open_reader(config, path)

    def iter_file(
        self,
        path: str | Path,
        bad: BadRows,
        *,
        fmt: str | None = None,
        keep: Sequence[str] = (),
        block_mb: float = 8.0,
    ) -> Iterator[tuple[EncodedRows, int]]:
        """``(rows, input bytes consumed)`` per block of raw file ``path``, in file order.

        Raises:
            DataFormatError: missing file or columns (named), or no usable row at all.
            BadRowError: a bad row under the ``error`` policy (file:line: column and reason).
        """
        reader = self.open_reader(path, fmt, block_mb)
        cols = [*self.columns, *(c for c in keep if c not in self.columns)]
        reader.require(cols)
        for table in prefetch(iter(reader.iter_tables(cols, bad))):
            yield self.encode_table(table, bad, str(path), keep), table.nbytes


def infer_format(path: Path, config: DatasetConfig) -> str:
    """The raw format of ``path`` from its suffix (compression suffixes ignored): ``.parquet``;
    ``.csv`` (the training CSV format if it was one); ``.tsv``: Criteo TSV when the model was
    trained on it, else CSV with tabs; anything else: the training format."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in _COMPRESSED]
    last = suffixes[-1] if suffixes else ""
    if last == ".parquet":
        return "parquet"
    if last == ".csv":
        return config.format if config.format in ("csv", "avazu_csv") else "csv"
    if last == ".tsv":
        return "criteo_tsv" if config.format == "criteo_tsv" else "csv"
    return config.format


def _tab_fields(path: Path) -> int:
    """Fields on the first line of a tab-separated file."""
    line, _ = read_first_line(path)
    return line.count(b"\t") + 1
