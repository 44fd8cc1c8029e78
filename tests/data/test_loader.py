"""BatchLoader: every row once per epoch, in the seeded block-shuffle order, the same batches
from every path (synchronous, background thread, resident), and errors that name the setting.

The expected order comes from ``_reference_rows``, a direct re-statement of the block shuffle
the loader has always used (block permutation, then each block's rows), so a change of order
between versions fails here.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctrzip.config import ConfigError
from ctrzip.data import placement
from ctrzip.data.dataset import SplitArrays, save_split
from ctrzip.data.loader import BatchLoader
from ctrzip.errors import UserError


def _split(n: int, dense: int = 2, seed: int = 0) -> SplitArrays:
    """Rows track themselves: column 0 of sparse and the label hold the row index."""
    rng = np.random.default_rng(seed)
    sparse = rng.integers(0, 1000, (n, 3), dtype=np.int32)
    sparse[:, 0] = np.arange(n)
    return SplitArrays(
        sparse=sparse,
        dense=rng.normal(size=(n, dense)).astype(np.float32),
        label=np.arange(n, dtype=np.float32),
    )


def _reference_rows(n: int, bs: int, block_batches: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    rng = np.random.default_rng(seed + epoch)
    block = bs * block_batches
    starts = np.arange(0, n, block)
    if shuffle:
        full = starts[starts + block <= n]
        starts = np.concatenate([rng.permutation(full), starts[len(full) :]])
    out = []
    for s in starts:
        e = min(n, s + block)
        out.append(s + (rng.permutation(e - s) if shuffle else np.arange(e - s)))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _reference_sizes(n: int, bs: int, drop_last: bool, merge: bool) -> list[int]:
    sizes = [bs] * (n // bs) + ([n % bs] if n % bs and not drop_last else [])
    if merge and not drop_last and bs > 1 and n > 1 and sizes[-1] == 1:
        last = sizes.pop()
        sizes[-1] += last
    return sizes


def _expected(n, bs, block_batches, shuffle, seed, epoch, drop_last, merge) -> list[np.ndarray]:
    rows = _reference_rows(n, bs, block_batches, shuffle, seed, epoch)
    ends = np.cumsum([0, *_reference_sizes(n, bs, drop_last, merge)])
    return [rows[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]


def _rows_of(batches) -> list[np.ndarray]:
    return [b.sparse[:, 0].long().numpy() for b in batches]


def _check_batches(split: SplitArrays, batches) -> None:
    """Each batch's arrays are the split's rows it names, with the split's dtypes."""
    for b in batches:
        idx = b.label.long().numpy()
        assert b.sparse.dtype == torch.int32 and b.dense.dtype == torch.float32
        assert b.label.dtype == torch.float32
        np.testing.assert_array_equal(b.sparse.numpy(), split.sparse[idx])
        np.testing.assert_array_equal(b.dense.numpy(), split.dense[idx])


PATHS = [
    {"prefetch": 0},
    {"prefetch": 3},
    {"data_placement": "resident"},
]


@pytest.mark.parametrize("path", PATHS, ids=["sync", "thread", "resident"])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize(
    ("n", "bs", "drop_last", "merge"),
    [
        (1000, 64, False, False),
        (1000, 64, True, False),
        (50, 64, False, False),
        (4 * 8 * 3 + 1, 8, False, True),
    ],
)
def test_every_row_once_in_the_seeded_order(path, shuffle, n, bs, drop_last, merge) -> None:
    split = _split(n)
    loader = BatchLoader(
        split,
        bs,
        shuffle=shuffle,
        seed=3,
        block_batches=4,
        drop_last=drop_last,
        merge_single_last=merge,
        **path,
    )
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        batches = list(loader)
        expect = _expected(n, bs, 4, shuffle, 3, epoch, drop_last, merge)
        assert len(batches) == len(loader) == len(expect)
        got = _rows_of(batches)
        for g, e in zip(got, expect, strict=True):
            np.testing.assert_array_equal(g, e)
        _check_batches(split, batches)
        served = np.concatenate(got) if got else np.zeros(0, np.int64)
        assert len(np.unique(served)) == len(served) == sum(_reference_sizes(n, bs, drop_last, merge))
        if not drop_last:
            assert np.array_equal(np.sort(served), np.arange(n))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    bs=st.integers(1, 40),
    block_batches=st.integers(1, 5),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    merge=st.booleans(),
    seed=st.integers(0, 5),
)
def test_batches_match_the_reference_order_for_any_sizes(
    n, bs, block_batches, shuffle, drop_last, merge, seed
):
    loader = BatchLoader(
        _split(n, dense=0), bs, shuffle=shuffle, seed=seed, block_batches=block_batches,
        drop_last=drop_last, merge_single_last=merge, prefetch=0,
    )  # fmt: skip
    got = _rows_of(loader)
    expect = _expected(n, bs, block_batches, shuffle, seed, 0, drop_last, merge)
    assert [len(g) for g in got] == [len(e) for e in expect]
    for g, e in zip(got, expect, strict=True):
        np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(loader.order(), _reference_rows(n, bs, block_batches, shuffle, seed, 0))


def test_shuffle_differs_from_stored_order_and_between_epochs_and_repeats_per_seed() -> None:
    split = _split(2000)
    a = BatchLoader(split, 50, shuffle=True, seed=7, block_batches=4)
    first = np.concatenate(_rows_of(a))
    assert not np.array_equal(first, np.arange(2000))
    assert np.array_equal(
        first, np.concatenate(_rows_of(BatchLoader(split, 50, shuffle=True, seed=7, block_batches=4)))
    )
    a.set_epoch(1)
    second = np.concatenate(_rows_of(a))
    assert not np.array_equal(first, second) and np.array_equal(np.sort(second), np.arange(2000))
    other = np.concatenate(_rows_of(BatchLoader(split, 50, shuffle=True, seed=8, block_batches=4)))
    assert not np.array_equal(first, other)
    # rows mix within blocks: a batch holds rows from all over its block of 200, not a run
    spans = [
        int(r.max() - r.min())
        for r in _rows_of(BatchLoader(split, 50, shuffle=True, seed=7, block_batches=4))
    ]
    assert min(spans) > 100


def test_thread_and_resident_batches_equal_the_synchronous_ones_from_a_memory_map(tmp_path) -> None:
    save_split(tmp_path, "train", _split(777, dense=1))  # the files EncodedDataset.open maps
    split = SplitArrays(
        *(np.load(tmp_path / f"train_{k}.npy", mmap_mode="r") for k in ("sparse", "dense", "label"))
    )
    assert isinstance(split.sparse, np.memmap)
    kw = {"batch_size": 32, "shuffle": True, "seed": 1, "block_batches": 3, "merge_single_last": True}
    sync = list(BatchLoader(split, **kw, prefetch=0))
    for path in ({"prefetch": 1}, {"prefetch": 4}, {"data_placement": "resident"}):
        other = list(BatchLoader(split, **kw, **path))
        assert len(other) == len(sync)
        for x, y in zip(sync, other, strict=True):
            assert (
                torch.equal(x.sparse, y.sparse)
                and torch.equal(x.dense, y.dense)
                and torch.equal(x.label, y.label)
            )


@pytest.mark.parametrize("path", PATHS, ids=["sync", "thread", "resident"])
def test_batches_own_their_memory(path) -> None:
    split = _split(100)
    before = split.sparse.copy()
    loader = BatchLoader(split, 16, shuffle=True, seed=0, **path)
    first = list(loader)
    for b in first:
        b.sparse.fill_(-1)
        b.label.fill_(-1)
    again = list(loader)
    np.testing.assert_array_equal(split.sparse, before)
    assert all(bool((b.label >= 0).all()) for b in again)
    _check_batches(split, again)


def test_resident_placement_holds_a_private_copy_on_the_device() -> None:
    split = _split(40)
    loader = BatchLoader(split, 8, data_placement="resident", device="cpu")
    assert loader.placement == "resident"
    r = loader._resident
    assert r.sparse.device.type == "cpu" and r.sparse.dtype == torch.int32
    assert not np.shares_memory(r.sparse.numpy(), split.sparse)
    np.testing.assert_array_equal(r.label.numpy(), split.label)


def test_auto_streams_on_cpu_and_goes_resident_on_cuda_only_when_it_fits(monkeypatch) -> None:
    split = _split(1000)
    need = placement.split_bytes(split)
    assert need == split.sparse.nbytes + split.dense.nbytes + split.label.nbytes + 8 * 1000
    assert BatchLoader(split, 8, data_placement="auto").placement == "stream"
    cuda = torch.device("cuda")
    monkeypatch.setattr(placement, "free_bytes", lambda device: 2 * need)
    assert placement.resolve_placement("auto", split, cuda) == "resident"
    assert placement.resolve_placement("auto", split, torch.device("cpu")) == "stream"
    monkeypatch.setattr(placement, "free_bytes", lambda device: 2 * need - 1)
    assert placement.resolve_placement("auto", split, cuda) == "stream"
    assert placement.resolve_placement("resident", split, cuda) == "resident"  # fits in 90%
    monkeypatch.setattr(placement, "free_bytes", lambda device: None)  # unknown: auto stays safe
    assert placement.resolve_placement("auto", split, cuda) == "stream"


def test_resident_that_does_not_fit_is_refused_naming_the_setting(monkeypatch) -> None:
    split = _split(1000)
    monkeypatch.setattr(placement, "free_bytes", lambda device: placement.split_bytes(split))
    with pytest.raises(ConfigError, match=r"data_placement=resident: the split needs .* GiB on cpu .* free"):
        BatchLoader(split, 8, data_placement="resident")
    with pytest.raises(ConfigError, match=r"^train\.data_placement=resident"):
        BatchLoader(split, 8, data_placement="resident", placement_setting="train.data_placement")


def test_free_memory_is_read_on_cpu() -> None:
    free = placement.free_bytes(torch.device("cpu"))
    assert free is None or free > 0


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"block_batches": 0}, "block_batches must be >= 1, got 0"),
        ({"prefetch": -1}, "prefetch must be >= 0"),
        (
            {"data_placement": "gpu"},
            r"data_placement must be one of \['auto', 'resident', 'stream'\], got 'gpu'",
        ),
    ],
)
def test_bad_settings_are_refused_by_name(kw, msg) -> None:
    with pytest.raises(UserError, match=msg):
        BatchLoader(_split(10), **{"batch_size": 4, **kw})


class _Exploding(np.ndarray):
    """An array whose reads from row 30 on raise: a memory map failing part way."""

    def __getitem__(self, key):
        if isinstance(key, slice) and (key.start or 0) >= 30:
            raise OSError(f"read error at row {key.start}")
        return super().__getitem__(key)


def _live_loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ctrzip-loader"]


def test_a_producer_error_reaches_the_consumer_and_the_thread_ends() -> None:
    split = _split(200)
    split = SplitArrays(split.sparse.view(_Exploding), split.dense, split.label)
    it = iter(BatchLoader(split, 10, block_batches=1, prefetch=2))
    got = []
    with pytest.raises(OSError, match="read error at row 30"):
        for b in it:
            got.append(b)
    assert len(got) == 3  # the batches read before the failure, in order
    assert not _live_loader_threads()


def test_stopping_early_stops_the_background_thread() -> None:
    loader = BatchLoader(_split(5000), 10, shuffle=True, prefetch=2)
    it = iter(loader)
    first = next(it)
    assert len(first) == 10 and _live_loader_threads()
    it.close()
    assert not _live_loader_threads()
    for _ in zip(range(3), loader, strict=False):  # abandoned by zip, then collected
        pass
    assert not _live_loader_threads()


def test_epoch_is_fixed_when_iteration_starts() -> None:
    loader = BatchLoader(_split(300), 10, shuffle=True, seed=2, prefetch=2)
    it = iter(loader)
    loader.set_epoch(5)  # takes effect for the next iteration only
    np.testing.assert_array_equal(np.concatenate(_rows_of(it)), _reference_rows(300, 10, 32, True, 2, 0))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize(
    ("n", "bs", "merge", "drop_last"),
    [(1000, 64, False, False), (129, 16, True, False), (1000, 64, False, True)],
)
def test_same_batches_as_the_loader_before_issue_13(shuffle, n, bs, merge, drop_last) -> None:
    """The frozen pre-change loader (benchmarks/loader_baseline.py) serves the same batches."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "loader_baseline.py"
    spec = importlib.util.spec_from_file_location("loader_baseline", path)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    split = _split(n)
    kw = {
        "shuffle": shuffle,
        "seed": 5,
        "block_batches": 3,
        "merge_single_last": merge,
        "drop_last": drop_last,
    }
    before = list(old.BatchLoader(split, bs, **kw))
    after = list(BatchLoader(split, bs, **kw))
    assert len(before) == len(after) == len(BatchLoader(split, bs, **kw))
    for x, y in zip(before, after, strict=True):
        assert (
            torch.equal(x.sparse, y.sparse)
            and torch.equal(x.dense, y.dense)
            and torch.equal(x.label, y.label)
        )
