"""Line-aligned byte blocks of a text file, with the line number of each block's first line.

Why: parsing a block with Polars is fast, but Polars does not say which line a row came
from; reading whole lines ourselves keeps line numbers exact for error messages.

Inputs are opened through ``open_text``: gzip, bzip2, xz and zstd files (the public Criteo
and Avazu files are distributed compressed) are decompressed on the fly, recognized by their
first bytes whatever their name, and a leading UTF-8 byte-order mark is skipped. Offsets
are in the decompressed text after the mark.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ctrzip.data.readers.errors import DataFormatError

BOM = b"\xef\xbb\xbf"
# (magic bytes, name): formats read directly, then formats recognized only to say so
COMPRESSED = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
OTHER_MAGIC = (
    (b"PK\x03\x04", "a zip archive (extract it first)"),
    (b"PAR1", "a parquet file (format: parquet)"),
    (b"\xff\xfe", "UTF-16 text (convert it to UTF-8, e.g. iconv -f UTF-16 -t UTF-8)"),
    (b"\xfe\xff", "UTF-16 text (convert it to UTF-8, e.g. iconv -f UTF-16 -t UTF-8)"),
)


@dataclass
class TextBlock:
    """Whole lines of a file (``data`` always ends with a newline)."""

    data: bytes
    first_line: int  # 1-based line number of the first line in data
    n_lines: int
    nbytes: int = 0  # bytes of the file on disk consumed for this block (progress)


def compression_of(path: Path) -> str | None:
    """``gzip`` / ``bzip2`` / ``xz`` / ``zstd`` from the file's first bytes, else None."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((name for magic, name in COMPRESSED if head.startswith(magic)), None)


def other_magic(head: bytes) -> str | None:
    """What a file starting with ``head`` is, when it is a known binary container."""
    return next((what for magic, what in OTHER_MAGIC if head.startswith(magic)), None)


@contextlib.contextmanager
def open_text(path: Path) -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """``(stream, raw)``: the decompressed bytes after any BOM, and the file on disk (whose
    ``tell()`` is the progress in bytes on disk)."""
    with open(path, "rb") as raw:
        kind = compression_of(path)
        stream: BinaryIO
        if kind == "gzip":
            stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        elif kind == "bzip2":
            stream = bz2.BZ2File(raw, mode="rb")  # type: ignore[assignment]
        elif kind == "xz":
            stream = lzma.LZMAFile(raw, mode="rb")  # type: ignore[assignment]  # noqa: SIM115
        elif kind == "zstd":
            stream = _ZstdReader(raw)  # type: ignore[assignment]
        else:
            stream = raw
        try:
            with stream if stream is not raw else contextlib.nullcontext(stream):
                head = stream.read(len(BOM))
                if head != BOM:
                    stream = _Prefixed(head, stream)  # type: ignore[assignment]
                yield stream, raw
        except (EOFError, OSError, zlib.error, lzma.LZMAError, _zstd_error()) as err:
            if kind is None:
                raise
            raise DataFormatError(f"{path}: the {kind} data is corrupt or truncated ({err})") from None


def _zstd_error() -> type[Exception]:
    try:
        import zstandard
    except ModuleNotFoundError:  # zstd input then fails earlier, naming the module
        return OSError
    return zstandard.ZstdError


class _ZstdReader(io.RawIOBase):
    """Decompressed bytes of a zstd file of one or more frames; a truncated last frame
    raises ``EOFError`` (zstandard's stream reader would end silently)."""

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard

        self._raw, self._new = raw, zstandard.ZstdDecompressor().decompressobj
        self._obj, self._buf, self._fed = self._new(), b"", False

    def readable(self) -> bool:
        return True

    def _fill(self, want: int) -> None:
        """Decompress until the buffer holds ``want`` bytes or the input ends."""
        while len(self._buf) < want:
            chunk = self._raw.read(1 << 20)
            if not chunk:
                if self._fed and not self._obj.eof:
                    raise EOFError("the last zstd frame is truncated")
                return
            while chunk:
                if self._obj.eof:  # a frame ended: the rest starts the next one
                    self._obj, self._fed = self._new(), False
                self._buf += self._obj.decompress(chunk)
                self._fed = True
                chunk = self._obj.unused_data if self._obj.eof else b""

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        want = size if size is not None and size >= 0 else 1 << 62
        self._fill(want)
        out, self._buf = self._buf[:want], self._buf[want:]
        return out

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        while b"\n" not in self._buf:
            had = len(self._buf)
            self._fill(had + (1 << 16))
            if len(self._buf) == had:
                break
        cut = self._buf.find(b"\n") + 1 or len(self._buf)
        out, self._buf = self._buf[:cut], self._buf[cut:]
        return out


class _Prefixed(io.RawIOBase):
    """A stream with ``head`` (bytes already read from it) put back in front."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head, self._stream = head, stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        if not self._head:
            return self._stream.read(size)
        if size is None or size < 0:
            out, self._head = self._head + self._stream.read(), b""
            return out
        out, self._head = self._head[:size], self._head[size:]
        if len(out) < size:
            out += self._stream.read(size - len(out))
        return out

    def readline(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        if b"\n" in self._head:
            cut = self._head.index(b"\n") + 1
            out, self._head = self._head[:cut], self._head[cut:]
            return out
        out, self._head = self._head, b""
        return out + self._stream.readline()


def _skip(stream: BinaryIO, n: int) -> None:
    while n > 0:
        got = stream.read(min(n, 1 << 20))
        if not got:
            return
        n -= len(got)


def read_head(path: Path, size: int = 1 << 16) -> bytes:
    """The first ``size`` bytes of the text (decompressed, without the BOM)."""
    with open_text(path) as (stream, _):
        return stream.read(size)


def read_first_line(path: Path) -> tuple[bytes, int]:
    """The first line (without its newline) and the offset just after it."""
    with open_text(path) as (stream, _):
        line = stream.readline()
    return line.rstrip(b"\r\n"), len(line)


def iter_blocks(
    path: Path, block_bytes: int, offset: int = 0, first_line: int = 1, encoding: str = "utf-8"
) -> Iterator[TextBlock]:
    """Yield ``TextBlock``s of about ``block_bytes``, starting at text offset ``offset``.

    ``encoding`` other than ``utf-8`` is transcoded to UTF-8 block by block (line breaks
    are ASCII in every supported encoding, so line numbers are unchanged).
    """
    line_no = first_line
    with open_text(path) as (f, raw):
        _skip(f, offset)
        rest, done = b"", raw.tell()

        def block(data: bytes, n: int) -> TextBlock:
            nonlocal done
            used, done = raw.tell() - done, raw.tell()
            if encoding != "utf-8":
                data = data.decode(encoding).encode("utf-8")
            return TextBlock(data, line_no, n, used)

        while True:
            chunk = f.read(block_bytes)
            if not chunk:
                if rest:
                    yield block(rest + b"\n", 1 + rest.count(b"\n"))
                return
            chunk = rest + chunk
            cut = chunk.rfind(b"\n") + 1
            if cut == 0:
                rest = chunk
                continue
            data, rest = chunk[:cut], chunk[cut:]
            n = data.count(b"\n")
            yield block(data, n)
            line_no += n


def count_lines(path: Path, offset: int = 0) -> int:
    """Lines from text offset ``offset`` to the end (a last line without newline counts)."""
    n, last = 0, b"\n"
    with open_text(path) as (f, _):
        _skip(f, offset)
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


def keep_lines(data: bytes, starts: np.ndarray, ends: np.ndarray, keep: np.ndarray) -> bytes:
    """``data`` without the lines where ``keep`` is False (vectorized byte mask)."""
    lengths = ends - starts + 1
    mask = np.repeat(keep, lengths)
    return np.frombuffer(data, dtype=np.uint8)[mask].tobytes()


def invalid_utf8(data: bytes, starts: np.ndarray, ends: np.ndarray) -> dict[int, int]:
    """Line index -> byte position (in the line) of the first invalid UTF-8 byte, for the
    lines of ``data`` that are not valid UTF-8 (C-speed check of the whole block first)."""
    if data.isascii():
        return {}
    try:
        data.decode("utf-8")
        return {}
    except UnicodeDecodeError:
        pass
    buf = np.frombuffer(data, dtype=np.uint8)
    high = np.flatnonzero(buf >= 0x80)
    lines = np.unique(np.searchsorted(ends, high, side="left"))
    out = {}
    for i in lines.tolist():
        try:
            data[starts[i] : ends[i]].decode("utf-8")
        except UnicodeDecodeError as err:
            out[i] = err.start
    return out
