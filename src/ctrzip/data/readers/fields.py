"""Split a block of delimited text into 64-bit keys of short fields, with numpy only.

Why: Polars builds a string object per field, which costs more than the rest of the encoder
together; when every wanted field of a block is at most 8 ASCII bytes (raw Criteo and Avazu),
locating the separators and loading 8 bytes per field gives the same values as exact keys
(``ctrzip.data.keycoder``). Any block this cannot read exactly as Polars would (quotes,
carriage returns, NUL or non-ASCII bytes, a wrong column count, a longer field) returns
None and goes through the full parser.
"""

from __future__ import annotations

import numpy as np

from ctrzip.data import jit

MAX_KEY_BYTES = 8
# keeps the first k bytes of a little-endian word: _MASKS[k] (k = 0..8)
_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(MAX_KEY_BYTES + 1)], dtype=np.uint64)


def field_keys(
    data: bytes, separator: str, n_lines: int, n_cols: int, want: list[int], quote: str | None
) -> np.ndarray | None:
    """uint64 [n_lines, len(want)] keys of columns ``want``, or None (see module docstring).

    The compiled kernel (``ctrzip.data.jit``, one pass over the bytes) when numba is
    installed, else ``field_keys_numpy``; both give the same result.
    """
    if jit.ENABLED:
        return jit.field_keys(data, separator, n_lines, n_cols, want, quote)
    return field_keys_numpy(data, separator, n_lines, n_cols, want, quote)


def field_keys_numpy(
    data: bytes, separator: str, n_lines: int, n_cols: int, want: list[int], quote: str | None
) -> np.ndarray | None:
    """``field_keys`` in numpy array passes.

    Args:
        data: whole lines, each ending with ``\\n``.
        separator: one-character column separator.
        n_lines: lines in ``data``.
        n_cols: columns every line must have.
        want: column indices to return, in output order.
        quote: quote character of the file format (None: quotes are plain bytes).
    """
    if n_cols < 2 or n_lines == 0 or not data.isascii():
        return None
    if b"\r" in data or b"\x00" in data or (quote is not None and quote.encode() in data):
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    seps = np.flatnonzero((buf == ord(separator)) | (buf == 10))
    if len(seps) != n_cols * n_lines:
        return None
    # n_lines newlines in all, each the last separator of a line: every line has n_cols fields
    grid = seps.reshape(n_lines, n_cols)
    if not np.all(buf[grid[:, -1]] == 10):
        return None
    # a field starts one past the previous separator (the first one at 0)
    starts = np.empty_like(seps)
    starts[0] = 0
    np.add(seps[:-1], 1, out=starts[1:])
    lengths = np.subtract(seps, starts, out=seps).reshape(n_lines, n_cols)
    starts = starts.reshape(n_lines, n_cols)
    del grid, seps
    if want != list(range(n_cols)):
        idx = np.asarray(want, dtype=np.intp)
        starts, lengths = starts[:, idx], lengths[:, idx]
    if lengths.max() > MAX_KEY_BYTES:
        return None
    # row-major [n, k]: the loads walk the block in order (column-major would re-read it k times)
    keys = _load_words(data, buf, starts)
    keys &= _MASKS.take(lengths)
    return keys


def _load_words(data: bytes, buf: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The 8 bytes at each ``start`` ([n, k], row-major increasing within a row) as
    little-endian words, zeros past the end of ``data``; ``start`` may be modified."""
    size = len(buf)
    if size < 2 * MAX_KEY_BYTES:
        padded = data + bytes(MAX_KEY_BYTES)
        return np.ndarray((size,), dtype="<u8", buffer=padded, offset=0, strides=(1,))[start]
    # unaligned 8-byte loads straight from the block: a strided view with a 1-byte step,
    # read by fancy indexing (take() is slower on a non-contiguous source)
    words = np.ndarray((size - 7,), dtype="<u8", buffer=data, offset=0, strides=(1,))
    last = size - MAX_KEY_BYTES
    # a line has at least one byte per column, so only the last few lines can start a field
    # within 8 bytes of the end
    tail = start[-(MAX_KEY_BYTES // start.shape[1] + 2) :]
    if tail.max() <= last:
        return words[start]
    near = tail > last
    wanted = tail[near]
    tail[near] = last  # in place: a valid load, replaced below
    out = words[start]
    end = data[size - 2 * MAX_KEY_BYTES :] + bytes(MAX_KEY_BYTES)
    end_words = np.ndarray((2 * MAX_KEY_BYTES,), dtype="<u8", buffer=end, offset=0, strides=(1,))
    out[-len(tail) :][near] = end_words[wanted - (size - 2 * MAX_KEY_BYTES)]
    return out
