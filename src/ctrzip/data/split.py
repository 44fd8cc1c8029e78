"""Row -> split assignment that does not depend on how the file is chunked.

Why: a random split drawn from a stateful RNG changes when the block size changes; hashing
(seed, row index) gives every row the same split however the file is read.
"""

from __future__ import annotations

import numpy as np

from ctrzip._utils import mix_key, splitmix64
from ctrzip.data.config import SplitConfig

# Split codes stored per row while encoding; index into ``SplitConfig.names``.
TRAIN, VALID, TEST = 0, 1, 2


def row_uniforms(seed: int, rows: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) draw per row index, a pure function of (seed, row index)."""
    key = mix_key(0x5EED, seed)
    h = splitmix64(np.asarray(rows, dtype=np.uint64) ^ key)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53  # top 53 bits


class SplitAssigner:
    """Assign data rows (0-based index in the input, bad rows included) to splits.

    Args:
        config: split method, ratios and seed.
        total_rows: rows in the input; required by ``sequential`` (boundaries at
            ``floor(cumsum(ratios) * total_rows)``).
    """

    def __init__(self, config: SplitConfig, total_rows: int | None = None) -> None:
        if config.method == "files":
            raise ValueError("split method 'files' assigns by input file, not by row")
        if config.method == "sequential" and total_rows is None:
            raise ValueError("a sequential split needs the total row count")
        self.config = config
        self.cuts = np.cumsum(np.asarray(config.ratios, dtype=np.float64))[:-1]
        # the epsilon keeps 0.7 + 0.2 = 0.8999... from losing a row to floating point
        self.bounds = None if total_rows is None else np.floor(self.cuts * total_rows + 1e-6).astype(np.int64)

    def assign(self, rows: np.ndarray) -> np.ndarray:
        """Split code (0 train, 1 valid, 2 test) for each 0-based row index."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.config.method == "sequential":
            assert self.bounds is not None
            return np.searchsorted(self.bounds, rows, side="right").astype(np.int8)
        u = row_uniforms(self.config.seed, rows)
        return np.searchsorted(self.cuts, u, side="right").astype(np.int8)
