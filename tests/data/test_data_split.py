"""Random and sequential splits: ratios, determinism by seed, independence from block size."""

from __future__ import annotations

import numpy as np
import pytest

from ctrzip.data.config import SplitConfig
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import encode_dataset
from ctrzip.data.split import SplitAssigner

from ._encode_helpers import write_csv


def _config(method: str, ratios: list[float], seed: int | None = None, block_mb: float = 32.0) -> dict:
    return {
        "name": "t",
        "format": "csv",
        "features": [{"name": "row", "type": "numeric", "transform": "dense", "normalizer": "minmax"}],
        "split": {"method": method, "ratios": ratios} | ({"seed": seed} if seed is not None else {}),
        "block_mb": block_mb,
    }


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("split") / "t.csv"
    n = 6000
    return write_csv(path, ["label", "row"], [[i % 2, i] for i in range(n)]), n


def _rows_of(root) -> dict[str, list[int]]:
    """Original row numbers per split, decoded from the min-max normalized dense field."""
    ds = EncodedDataset.open(root)
    norm = ds.schema.meta["normalizers"]["row"]
    return {
        s: np.rint(ds[s].dense[:, 0] * norm["scale"] + norm["shift"]).astype(int).tolist() for s in ds.splits
    }


@pytest.mark.parametrize("ratios", [[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.9, 0.1]])
def test_random_split_ratios_and_block_independence(table, tmp_path, ratios) -> None:
    path, n = table
    big = encode_dataset(_config("random", ratios, seed=5), path, tmp_path / "big", progress=False)
    small = encode_dataset(
        _config("random", ratios, 5, block_mb=0.002), path, tmp_path / "small", progress=False
    )
    assert list(big.rows) == ["train", "valid", "test"][: len(ratios)]
    for name, r in zip(big.rows, ratios, strict=True):
        assert abs(big.rows[name] / n - r) < 4 * np.sqrt(r * (1 - r) / n) + 1e-9
    assert big.rows == small.rows
    assert _rows_of(tmp_path / "big") == _rows_of(tmp_path / "small")
    # every row lands in exactly one split
    allrows = sorted(sum(_rows_of(tmp_path / "big").values(), []))
    assert allrows == list(range(n))


def test_random_split_seed_changes_assignment(table, tmp_path) -> None:
    path, _ = table
    a = encode_dataset(_config("random", [0.8, 0.2], seed=1), path, tmp_path / "a", progress=False)
    b = encode_dataset(_config("random", [0.8, 0.2], seed=1), path, tmp_path / "b", progress=False)
    c = encode_dataset(_config("random", [0.8, 0.2], seed=2), path, tmp_path / "c", progress=False)
    ra, rb, rc = (_rows_of(tmp_path / k) for k in "abc")
    assert ra == rb and a.rows == b.rows
    assert set(ra["valid"]) != set(rc["valid"]) and c.rows["train"] > 0


def test_sequential_split_keeps_file_order(table, tmp_path) -> None:
    path, n = table
    rep = encode_dataset(_config("sequential", [0.7, 0.2, 0.1]), path, tmp_path, progress=False)
    assert rep.rows == {"train": 4200, "valid": 1200, "test": 600}
    rows = _rows_of(tmp_path)
    assert rows["train"] == list(range(4200))
    assert rows["test"] == list(range(5400, n))
    meta = EncodedDataset.open(tmp_path).schema.meta
    assert meta["split"] == {"method": "sequential", "ratios": [0.7, 0.2, 0.1], "seed": None}


def test_assigner_is_pure_function_of_row_index() -> None:
    cfg = SplitConfig("random", [0.8, 0.1, 0.1], seed=9)
    rows = np.arange(50_000)
    full = SplitAssigner(cfg).assign(rows)
    pieces = np.concatenate([SplitAssigner(cfg).assign(rows[a : a + 777]) for a in range(0, len(rows), 777)])
    np.testing.assert_array_equal(full, pieces)
    np.testing.assert_allclose(np.bincount(full) / len(rows), [0.8, 0.1, 0.1], atol=0.01)
    with pytest.raises(ValueError, match="total row count"):
        SplitAssigner(SplitConfig("sequential", [0.5, 0.5]))


def test_row_uniforms_are_splitmix64_of_the_row_index() -> None:
    """Pins the random split to an independent pure-Python splitmix64 (refactors keep it)."""
    from ctrzip.data.split import row_uniforms

    mask = 2**64 - 1

    def mix(x: int) -> int:
        z = (x + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    key = mix(mix(0x5EED) ^ 7)
    rows = [0, 1, 5, 123456, 10**12]
    want = [(mix(r ^ key) >> 11) / 2**53 for r in rows]
    np.testing.assert_array_equal(row_uniforms(7, np.array(rows)), want)
