"""Provisional codes: stable across blocks (table and wide-range paths), per-field counting."""

from __future__ import annotations

import numpy as np
import pytest

from ctrzip.data.columns import TokenCoder
from ctrzip.data.counts import CodeCounter


@pytest.mark.parametrize("span", [50, 10**9])
def test_token_coder_is_stable_and_decodes(span) -> None:
    rng = np.random.default_rng(0)
    coder = TokenCoder()
    pool = np.unique(rng.integers(-span, span, 300)).astype(np.float64)
    seen_codes: dict[float, int] = {}
    for _ in range(6):  # blocks widen the range and bring new tokens
        block = rng.choice(pool, 500)
        block[rng.random(500) < 0.1] = np.nan
        codes = coder.encode(block)
        assert np.all(codes[np.isnan(block)] == 0)
        for t, c in zip(block[~np.isnan(block)], codes[~np.isnan(block)], strict=True):
            assert coder.values[c - 1] == t
            assert seen_codes.setdefault(t, c) == c
    assert sorted(coder.values) == sorted(set(coder.values))


def test_code_counter_matches_per_field_bincount() -> None:
    rng = np.random.default_rng(1)
    counter = CodeCounter({"a": 1, "s": 3, "b": 1})
    blocks = [rng.integers(0, k, size=(200, 5)).astype(np.int32) for k in (3, 40, 7)]
    for b in blocks:
        counter.add(b)
    allb = np.concatenate(blocks)
    for name, cols in (("a", [0]), ("s", [1, 2, 3]), ("b", [4])):
        want = np.bincount(allb[:, cols].ravel())
        np.testing.assert_array_equal(counter.counts[name][: len(want)], want)
        assert counter.counts[name][len(want) :].sum() == 0
