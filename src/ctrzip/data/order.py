"""The order in which one epoch serves the rows of a split, and how it is cut into batches.

Shuffling is by blocks of ``block_rows`` consecutive rows: the full blocks are permuted, a
short last block stays last, and the rows of each block are permuted when the block is
reached. A block is one contiguous range of the memory map, so reading it stays sequential
on a large file, while every row can land anywhere in its block's batches.

Rows are addressed by *position* ``p`` in the epoch's stream (``0 <= p < N``): position
``p`` lies in block ``p // block_rows`` at offset ``p % block_rows``. Batches are ranges of
positions (``BatchPlan``), so the order (``EpochOrder``) and the batching are independent.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np


class BatchPlan:
    """Batches as ranges of stream positions ``[start, stop)``.

    Args:
        n: rows in the split.
        batch_size: rows per batch (>= 1).
        drop_last: drop a final partial batch.
        merge_single_last: a final batch of one row joins the batch before it (``n > 1``,
            ``batch_size > 1``, not ``drop_last``), so no batch has one row unless ``n == 1``.
    """

    def __init__(self, n: int, batch_size: int, drop_last: bool, merge_single_last: bool) -> None:
        self.n, self.batch_size = n, batch_size
        self.merges = merge_single_last and not drop_last and batch_size > 1 and n > 1 and n % batch_size == 1
        self.count = n // batch_size if drop_last or self.merges else math.ceil(n / batch_size)

    def __len__(self) -> int:
        return self.count

    def bounds(self, k: int) -> tuple[int, int]:
        """Positions ``[start, stop)`` of batch ``k`` (``0 <= k < len(self)``)."""
        start = k * self.batch_size
        stop = self.n if (self.merges and k == self.count - 1) else min(self.n, start + self.batch_size)
        return start, stop


class EpochOrder:
    """Which row each stream position serves in one epoch.

    Args:
        n: rows in the split.
        block_rows: rows per shuffle block (>= 1).
        rng: the epoch's generator, or None for the stored order. Draws happen in a fixed
            sequence (block permutation first, then each block's row permutation in serving
            order), so the same seed gives the same order however the epoch is consumed.
    """

    def __init__(self, n: int, block_rows: int, rng: np.random.Generator | None) -> None:
        self.n, self.block_rows, self.rng = n, block_rows, rng
        starts = np.arange(0, n, block_rows, dtype=np.int64)
        if rng is not None:
            full = starts[starts + block_rows <= n]
            starts = np.concatenate([rng.permutation(full), starts[len(full) :]])
        self.starts = starts
        self._drawn = 0  # blocks whose permutation has been drawn
        self._perm = _NONE  # the permutation of block ``_drawn - 1``

    def _range(self, j: int) -> tuple[int, int]:
        s = int(self.starts[j])
        return s, min(self.n, s + self.block_rows)

    def block(self, j: int) -> tuple[int, int, np.ndarray | None]:
        """Block ``j`` in serving order: ``(first row, end row, row permutation or None)``.

        The permutation (int64 ``[end - first]``) gives, for each offset in the block, the
        offset of the row served there. Blocks must be asked for in non-decreasing ``j``: only
        the latest permutation is kept, and skipped blocks are still drawn so the generator's
        draws keep their order.

        Raises:
            ValueError: ``j`` is before the latest block asked for.
        """
        s, e = self._range(j)
        if self.rng is None:
            return s, e, None
        if j < self._drawn - 1:
            raise ValueError(f"block {j} asked for after block {self._drawn - 1}; blocks go in order")
        while self._drawn <= j:
            a, b = self._range(self._drawn)
            self._perm = self.rng.permutation(b - a)
            self._drawn += 1
        return s, e, self._perm

    def pieces(self, start: int, stop: int) -> Iterator[tuple[int, int, np.ndarray | slice]]:
        """The rows at positions ``[start, stop)`` as ``(block first row, block end row, rows)``.

        ``rows`` indexes into the block (``array[first:end][rows]``): an int64 array when
        shuffled, a slice otherwise. Consecutive calls must not go backwards.
        """
        p = start
        while p < stop:
            j, off = divmod(p, self.block_rows)
            s, e, perm = self.block(j)
            hi = min(stop - p, e - s - off) + off
            yield s, e, (slice(off, hi) if perm is None else perm[off:hi])
            p += hi - off

    def rows(self) -> np.ndarray:
        """All ``N`` row indices in serving order (int64 ``[N]``), drawing every block."""
        out = np.empty(self.n, dtype=np.int64)
        for j in range(len(self.starts)):
            s, e, perm = self.block(j)
            p = j * self.block_rows
            out[p : p + e - s] = np.arange(s, e) if perm is None else perm + s
        return out


_NONE = np.empty(0, dtype=np.int64)
