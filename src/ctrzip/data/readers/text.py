"""Line-aligned byte blocks of a text file, with the line number of each block's first line.

Why: parsing a block with Polars is fast, but Polars does not say which line a row came
from; reading whole lines ourselves keeps line numbers exact for error messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class TextBlock:
    """Whole lines of a file (``data`` always ends with a newline)."""

    data: bytes
    first_line: int  # 1-based line number of the first line in data
    n_lines: int


def read_first_line(path: Path) -> tuple[bytes, int]:
    """The first line (without its newline) and the byte offset just after it."""
    with open(path, "rb") as f:
        line = f.readline()
    return line.rstrip(b"\r\n"), len(line)


def iter_blocks(path: Path, block_bytes: int, offset: int = 0, first_line: int = 1) -> Iterator[TextBlock]:
    """Yield ``TextBlock``s of about ``block_bytes``, starting at byte ``offset``."""
    line_no = first_line
    with open(path, "rb") as f:
        f.seek(offset)
        rest = b""
        while True:
            chunk = f.read(block_bytes)
            if not chunk:
                if rest:
                    data = rest + b"\n"
                    yield TextBlock(data, line_no, 1 + rest.count(b"\n"))
                return
            chunk = rest + chunk
            cut = chunk.rfind(b"\n") + 1
            if cut == 0:
                rest = chunk
                continue
            data, rest = chunk[:cut], chunk[cut:]
            n = data.count(b"\n")
            yield TextBlock(data, line_no, n)
            line_no += n


def count_lines(path: Path, offset: int = 0) -> int:
    """Lines from byte ``offset`` to the end (a last line without newline counts)."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(16 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def line_spans(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, before ``\\n``) byte offsets of every line in ``data``."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], ends[:-1] + 1))
    return starts, ends


def count_byte_per_line(data: bytes, byte: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """How often ``byte`` occurs in each line, vectorized."""
    pos = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == byte)
    return np.searchsorted(pos, ends) - np.searchsorted(pos, starts)


def keep_lines(data: bytes, starts: np.ndarray, ends: np.ndarray, keep: np.ndarray) -> bytes:
    """``data`` without the lines where ``keep`` is False (vectorized byte mask)."""
    lengths = ends - starts + 1
    mask = np.repeat(keep, lengths)
    return np.frombuffer(data, dtype=np.uint8)[mask].tobytes()
