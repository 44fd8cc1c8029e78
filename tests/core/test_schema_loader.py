import numpy as np
import pytest
import torch

from ctrzip.data.dataset import EncodedDataset, SplitArrays, save_counts, save_split
from ctrzip.data.loader import BatchLoader
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.registry import Registry


def test_schema_round_trip_and_slices(tmp_path, tiny_schema):
    p = tmp_path / "feature_map.json"
    tiny_schema.save(p)
    back = FeatureSchema.load(p)
    assert back == tiny_schema
    assert tiny_schema.sparse_width == 1 + 1 + 1 + 4
    assert tiny_schema.sparse_slices()["tags"] == slice(3, 7)
    d = tiny_schema.to_dict()
    assert d["offsets"] == {"user": 0, "item": 50, "cat": 170, "tags": 177}
    assert d["total_vocab"] == 197


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"name": "a.b", "kind": "categorical", "vocab_size": 3}, "identifier"),
        ({"name": "a", "kind": "categorical", "vocab_size": 1}, "vocab_size"),
        ({"name": "a", "kind": "dense", "vocab_size": 3}, "no vocabulary"),
        ({"name": "a", "kind": "weird", "vocab_size": 3}, "unknown kind"),
    ],
)
def test_bad_field_specs(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        FieldSpec(**kwargs)


def test_duplicate_fields():
    f = FieldSpec("a", "categorical", vocab_size=3)
    with pytest.raises(ValueError, match="duplicate"):
        FeatureSchema(fields=(f, f))


def _split(n: int, seed: int = 0) -> SplitArrays:
    rng = np.random.default_rng(seed)
    return SplitArrays(
        sparse=rng.integers(0, 100, (n, 3), dtype=np.int32),
        dense=rng.normal(size=(n, 2)).astype(np.float32),
        label=np.arange(n, dtype=np.float32),  # label = row index: lets us track rows
    )


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n, bs, drop_last", [(1000, 64, False), (1000, 64, True), (50, 64, False)])
def test_loader_covers_every_row_once(shuffle, n, bs, drop_last):
    split = _split(n)
    loader = BatchLoader(split, batch_size=bs, shuffle=shuffle, seed=3, block_batches=4, drop_last=drop_last)
    rows = []
    for b in loader:
        assert b.sparse.dtype == torch.int32 and b.label.dtype == torch.float32
        idx = b.label.long().numpy()
        np.testing.assert_array_equal(b.sparse.numpy(), split.sparse[idx])
        np.testing.assert_array_equal(b.dense.numpy(), split.dense[idx])
        rows.append(idx)
        if drop_last:
            assert len(idx) == bs
    rows = np.concatenate(rows) if rows else np.array([], dtype=np.int64)
    expect = (n // bs) * bs if drop_last else n
    assert len(rows) == expect
    assert len(loader) == (n // bs if drop_last else -(-n // bs))
    assert len(np.unique(rows)) == len(rows)
    if shuffle and n > bs:
        assert not np.array_equal(rows, np.sort(rows))


def test_loader_is_seeded_per_epoch():
    split = _split(500)
    a = BatchLoader(split, 32, shuffle=True, seed=1)
    first = torch.cat([b.label for b in a])
    again = torch.cat([b.label for b in a])
    assert torch.equal(first, again)
    a.set_epoch(1)
    assert not torch.equal(first, torch.cat([b.label for b in a]))


def test_encoded_dataset_open(tmp_path, tiny_schema):
    tiny_schema.save(tmp_path / "feature_map.json")
    split = _split(20)
    save_split(tmp_path, "train", split)
    save_counts(tmp_path / "counts.npz", {"user": np.arange(50)})
    ds = EncodedDataset.open(tmp_path)
    assert ds.schema == tiny_schema and list(ds.splits) == ["train"]
    np.testing.assert_array_equal(ds["train"].sparse, split.sparse)
    np.testing.assert_array_equal(ds.counts["user"], np.arange(50))
    with pytest.raises(KeyError, match="no split 'test'"):
        ds["test"]
    with pytest.raises(FileNotFoundError, match="not an encoded dataset"):
        EncodedDataset.open(tmp_path / "nope")


def test_registry_errors():
    r: Registry[int] = Registry("thing")
    r.register("alpha")(1)
    with pytest.raises(ValueError, match="already registered"):
        r.register("alpha")(2)
    with pytest.raises(KeyError, match="did you mean 'alpha'"):
        r.get("alpah")
