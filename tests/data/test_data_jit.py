"""The compiled kernels of the keyed path (``ctrzip.data.jit``) against their numpy
counterparts, and whole encodes with and without them: byte-identical outputs."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from ctrzip.data import jit
from ctrzip.data.config import load_dataset_config
from ctrzip.data.encode import encode_dataset
from ctrzip.data.keycoder import KeyCoder
from ctrzip.data.readers import BadRowError
from ctrzip.data.readers.fields import field_keys_numpy
from ctrzip.data.synthetic import TeacherConfig, generate

from ._encode_helpers import criteo_config

pytest.importorskip("numba")
pytestmark = pytest.mark.skipif(not jit.ENABLED, reason="CTRZIP_NO_JIT is set")

FAST = TeacherConfig(calibration_rows=4000)
ALPHABET = np.array(list(b"abcxyz019 .-_ABC"), dtype=np.uint8)


def _lines(rng: np.random.Generator, n: int, cols: int, max_len: int) -> bytes:
    lens = rng.integers(0, max_len + 1, size=(n, cols))
    rows = ["\t".join("".join(map(chr, rng.choice(ALPHABET, k))) for k in row) for row in lens]
    return "".join(r + "\n" for r in rows).encode()


@pytest.mark.parametrize("max_len", [8, 12])
@pytest.mark.parametrize("want", [[0, 1, 2, 3, 4], [3, 0, 3, 4], [1]])
def test_jit_field_keys_equal_numpy(max_len, want) -> None:
    rng = np.random.default_rng(max_len)
    for n in (1, 2, 3, 50, 400):
        data = _lines(rng, n, 5, max_len)
        got = jit.field_keys(data, "\t", n, 5, want, '"')
        ref = field_keys_numpy(data, "\t", n, 5, want, '"')
        assert (got is None) == (ref is None), (n, want)
        if ref is not None:
            assert got is not None and got.dtype == np.uint64
            np.testing.assert_array_equal(got, ref)
    # a long field in a column nobody asked for is fine; asked for, the block is declined
    long = b"1\tabcdefghijk\tz\n0\t\t\n"
    assert jit.field_keys(long, "\t", 2, 3, [0, 2], None) is not None
    assert jit.field_keys(long, "\t", 2, 3, [1], None) is None
    np.testing.assert_array_equal(
        jit.field_keys(long, "\t", 2, 3, [2, 0], None), field_keys_numpy(long, "\t", 2, 3, [2, 0], None)
    )


@pytest.mark.parametrize(
    ("data", "quote", "n_lines"),
    [
        (b'1\t"a"\n0\tb\n', '"', 2),  # quoting in use
        (b"1\ta\r\n0\tb\r\n", None, 2),  # carriage returns
        ("1\t\u00e9\n0\tb\n".encode(), None, 2),  # non-ASCII
        (b"1\ta\x00\n0\tb\n", None, 2),  # NUL
        (b"1\ta\tx\n0\n", None, 2),  # two lines of wrong width, right separator total
        (b"1\t123456789\n0\tb\n", None, 2),  # a field longer than a key
        (b"1\ta\n0\tb\n", None, 3),  # fewer lines than the block claims
        (b"1\ta\n0\tb\n", None, 1),  # more lines than the block claims
        (b"1\ta\n0\tb", None, 2),  # no final newline
    ],
)
def test_jit_field_keys_decline_like_numpy(data, quote, n_lines) -> None:
    assert jit.field_keys(data, "\t", n_lines, 2, [0, 1], quote) is None


def test_jit_key_coder_gives_key_coder_codes() -> None:
    rng = np.random.default_rng(0)
    pool = np.concatenate([rng.integers(1, 2**63, 3000, dtype=np.uint64), np.arange(1, 500, dtype=np.uint64)])
    fast, ref = jit.JitKeyCoder(bits=2), KeyCoder(bits=2)  # tiny: wraps, collisions, rehashes
    for _ in range(8):
        keys = rng.choice(pool, 4000)
        keys[rng.random(4000) < 0.05] = 0
        got = fast.encode(keys)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, ref.encode(keys.copy()))
        np.testing.assert_array_equal(fast.keys, ref.keys)
    assert fast.size == ref.size == len(np.unique(pool))


def test_jit_key_coder_refuses_more_codes_than_int32(monkeypatch) -> None:
    monkeypatch.setattr(jit, "_MAX_CODES", 5)  # as if 5 were the int32 limit
    coder = jit.JitKeyCoder(bits=4)
    with pytest.raises(OverflowError, match=r"more than 2\*\*31 distinct keys"):
        coder.encode(np.arange(1, 20, dtype=np.uint64))


def test_jit_group_by_split_is_a_stable_sort() -> None:
    rng = np.random.default_rng(1)
    n = 1000
    split = rng.integers(0, 3, n).astype(np.int8)
    split[:10] = 2  # a split-2 row first
    codes = rng.integers(0, 99, (n, 4)).astype(np.int32)
    dense = rng.random((n, 2)).astype(np.float32)
    label = np.arange(n, dtype=np.float32)
    c, d, y, bounds = jit.group_by_split(split, 4, codes, dense, label)
    order = np.argsort(split, kind="stable")
    np.testing.assert_array_equal(c, codes[order])
    np.testing.assert_array_equal(d, dense[order])
    np.testing.assert_array_equal(y, label[order])
    np.testing.assert_array_equal(bounds, np.searchsorted(split[order], np.arange(5)))
    assert bounds[-1] == bounds[-2] == n  # split 3 is empty
    with pytest.raises(ValueError, match=r"split codes must be in \[0, 3\), got 0\.\.3"):
        jit.group_by_split(np.array([0, 3], np.int8), 3, codes[:2], dense[:2], label[:2])


def test_jit_lookup_matches_gathers_and_stops_at_bad_values() -> None:
    rng = np.random.default_rng(2)
    code = rng.integers(0, 50, 30).astype(np.int32)
    value = rng.random(30).astype(np.float32)
    bad = np.zeros(30, dtype=bool)
    raw = rng.integers(1, 30, (200, 6)).astype(np.int32)  # label, 3 sparse, 2 dense
    got = jit.lookup(raw, code, value, bad, True, 3)
    assert got is not None
    np.testing.assert_array_equal(got[0], code[raw[:, 1:4]])
    np.testing.assert_array_equal(got[1], value[raw[:, 4:]])
    np.testing.assert_array_equal(got[2], value[raw[:, 0]])
    bad[raw[150, 5]] = True
    assert jit.lookup(raw, code, value, bad, True, 3) is None
    assert jit.lookup(raw, code, value, bad, False, 3) is not None  # not asked to check


def _encode_twice(monkeypatch, cfg, inputs, tmp_path: Path) -> tuple[Path, Path]:
    """Encode with the kernels and with today's numpy path."""
    encode_dataset(cfg, inputs, tmp_path / "jit", progress=False)
    with monkeypatch.context() as m:
        m.setattr(jit, "ENABLED", False)
        encode_dataset(cfg, inputs, tmp_path / "numpy", progress=False)
    return tmp_path / "jit", tmp_path / "numpy"


def _assert_same_bytes(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.suffix != ".json")
    files += sorted(p.relative_to(a) for p in (a / "vocab").glob("*.json"))
    assert any(f.suffix == ".npy" for f in files) and (a / "counts.npz") in [a / f for f in files]
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "encoder.json").read_bytes() == (b / "encoder.json").read_bytes()


def test_encode_with_kernels_is_byte_identical_on_the_criteo_fixture(monkeypatch, tmp_path) -> None:
    from tests.conftest import SHARED_DATA

    src = SHARED_DATA / "criteo_sample" / "kaggle_format.txt"
    if not src.exists():
        pytest.skip("shared criteo_sample not found")
    cfg = criteo_config("criteo_tsv", min_count=2, split={"method": "random", "seed": 3})
    _assert_same_bytes(*_encode_twice(monkeypatch, cfg, src, tmp_path))


def test_encode_with_kernels_is_byte_identical_on_a_generated_file(monkeypatch, tmp_path) -> None:
    raw = tmp_path / "raw.txt"
    generate("criteo-like", raw, 6000, seed=5, chunk_rows=3000, progress=False, teacher=FAST)
    with raw.open("a") as f:  # a line the keyed path cannot read: its block takes the Polars path
        f.write("1\t" + "\t".join(["123456789"] * 13 + ["abcdef012"] * 26) + "\n")
    for min_count in (1, 3):
        cfg = load_dataset_config("criteo", ("block_mb=0.1", f"min_count={min_count}"))
        _assert_same_bytes(*_encode_twice(monkeypatch, cfg, raw, tmp_path / f"m{min_count}"))


def test_a_bad_row_stops_the_pipeline_threads_and_names_the_line(tmp_path) -> None:
    """A bad value met by the main thread mid-file (on_bad_rows: error) raises naming the
    file and line, and the reading and coding threads are stopped, not left blocked."""
    rng = np.random.default_rng(4)
    lines = []
    for i in range(3000):
        ints = [str(v) for v in rng.integers(0, 500, 13)]
        cats = [f"{int(v):08x}" for v in rng.integers(0, 3000, 26)]
        label = "7" if i == 199 else str(int(rng.random() < 0.25))
        lines.append("\t".join([label, *ints, *cats]))
    path = tmp_path / "raw.txt"
    path.write_text("\n".join(lines) + "\n")
    cfg = criteo_config("criteo_tsv", block_mb=0.02, split={"method": "random", "seed": 1})
    with pytest.raises(BadRowError, match=rf"{path}:200: column label: '7' is not a 0/1 label"):
        encode_dataset(cfg, path, tmp_path / "out", progress=False)
    assert [t for t in threading.enumerate() if t.name == "ctrzip-prefetch"] == []
