"""Append-only temporary binaries per split (the hand-off between the encoder's passes) and a
chunked ``.npy`` writer.

Why plain reads and writes instead of memory maps over whole files: pages of a mapped 7 GB
output count toward the process's resident memory while mapped; chunked file I/O keeps the
encoder's memory flat whatever the file size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np


class SplitFiles:
    """Per split: ``codes`` int32 [n, S], ``dense`` float32 [n, Dn], ``label`` float32 [n].

    Args:
        root: folder for the temporary files (created).
        names: split names (each gets files, possibly empty).
        width: sparse columns S.
        n_dense: dense columns Dn.
    """

    def __init__(self, root: Path, names: tuple[str, ...], width: int, n_dense: int) -> None:
        self.root, self.width, self.n_dense = root, width, n_dense
        root.mkdir(parents=True, exist_ok=True)
        self.rows = {name: 0 for name in names}
        self._handles: dict[str, tuple[BinaryIO, BinaryIO, BinaryIO]] = {}
        for name in names:
            # closed in close(); the handles outlive this call by design
            fc, fd, fl = (open(self._path(name, k), "wb") for k in ("codes", "dense", "label"))  # noqa: SIM115
            self._handles[name] = (fc, fd, fl)

    def _path(self, name: str, kind: str) -> Path:
        return self.root / f"{name}_{kind}.bin"

    def append(self, name: str, codes: np.ndarray, dense: np.ndarray, label: np.ndarray) -> None:
        fc, fd, fl = self._handles[name]
        np.ascontiguousarray(codes, dtype=np.int32).tofile(fc)
        np.ascontiguousarray(dense, dtype=np.float32).tofile(fd)
        np.ascontiguousarray(label, dtype=np.float32).tofile(fl)
        self.rows[name] += len(label)

    def close(self) -> None:
        for handles in self._handles.values():
            for h in handles:
                h.close()
        self._handles = {}

    def chunks(self, name: str, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(codes, dense, label)`` of one split, ``rows`` at a time (call after ``close``)."""
        self.close()
        n = self.rows[name]
        with (
            open(self._path(name, "codes"), "rb") as fc,
            open(self._path(name, "dense"), "rb") as fd,
            open(self._path(name, "label"), "rb") as fl,
        ):
            for a in range(0, n, rows):
                k = min(rows, n - a)
                yield (
                    np.fromfile(fc, np.int32, k * self.width).reshape(k, self.width),
                    np.fromfile(fd, np.float32, k * self.n_dense).reshape(k, self.n_dense),
                    np.fromfile(fl, np.float32, k),
                )


class NpyWriter:
    """Write a ``.npy`` file of known shape in row chunks, without keeping it mapped.

    The file (header and size) is created by ``np.lib.format.open_memmap``; rows are then
    appended with ordinary writes after the header.
    """

    def __init__(self, path: Path, dtype: type, shape: tuple[int, ...]) -> None:
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        offset = arr.offset
        del arr
        self.dtype, self.shape = np.dtype(dtype), shape
        self._file = open(path, "r+b")  # noqa: SIM115 - closed in close()
        self._file.seek(offset)
        self.rows = 0

    def write(self, chunk: np.ndarray) -> None:
        if chunk.shape[1:] != self.shape[1:]:
            raise ValueError(f"chunk shape {chunk.shape} does not fit {self.shape}")
        np.ascontiguousarray(chunk, dtype=self.dtype).tofile(self._file)
        self.rows += len(chunk)

    def close(self) -> None:
        self._file.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"wrote {self.rows} rows, expected {self.shape[0]}")
