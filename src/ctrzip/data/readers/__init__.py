"""Raw-data readers: each turns one input file into blocks of string columns with line numbers."""

from __future__ import annotations

from pathlib import Path

from ctrzip.data.config import DatasetConfig
from ctrzip.data.readers.base import BadRowError, BadRows, DataFormatError, RawTable, Reader
from ctrzip.data.readers.delimited import CRITEO_COLUMNS, DelimitedReader, criteo_reader, csv_reader
from ctrzip.data.readers.libsvm import LibsvmReader
from ctrzip.data.readers.parquet import ParquetReader

__all__ = [
    "CRITEO_COLUMNS",
    "BadRowError",
    "BadRows",
    "DataFormatError",
    "DelimitedReader",
    "LibsvmReader",
    "ParquetReader",
    "RawTable",
    "Reader",
    "open_reader",
]


def open_reader(config: DatasetConfig, path: str | Path) -> Reader:
    """The reader for ``config.format`` on ``path``."""
    block = int(config.block_mb * (1 << 20))  # >= 1 KiB (DatasetConfig checks)
    if config.format == "criteo_tsv":
        return criteo_reader(path, block, config.encoding)
    if config.format == "avazu_csv":
        return csv_reader(path, ",", block, config.encoding)
    if config.format == "csv":
        return csv_reader(path, config.separator or ",", block, config.encoding)
    if config.format == "parquet":
        return ParquetReader(path, block)
    if config.format == "libsvm":
        kinds = {f.column: ("value" if f.type == "numeric" else "feature") for f in config.features}
        return LibsvmReader(path, config.label, kinds, block, config.encoding)
    raise DataFormatError(f"unknown format {config.format!r}")
