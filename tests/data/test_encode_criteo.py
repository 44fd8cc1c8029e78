"""Encoding the real Criteo sample: vocab order, counts, OOV, numeric buckets, both readers agree."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import Encoder, encode_dataset

from ._encode_helpers import CATEGORICAL, NUMERIC, criteo_config, read_rows, vocab


def _bucket(text: str) -> int | None:
    """Independent reference of the Criteo transform on one raw string."""
    if text == "":
        return None
    v = float(text)
    return int(math.floor(math.log(v) ** 2)) if v > 2 else int(v)


def _token(field: str, text: str) -> object:
    return _bucket(text) if field in NUMERIC else (text or None)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> tuple[Path, Path]:
    from tests.conftest import SHARED_DATA

    src = SHARED_DATA / "criteo_sample"
    if not src.exists():
        pytest.skip("shared criteo_sample not found")
    out = tmp_path_factory.mktemp("criteo")
    inputs = {s: src / f"{s}.csv" for s in ("train", "valid", "test")}
    encode_dataset(criteo_config(min_count=2), inputs, out, progress=False)
    return src, out


def test_vocab_order_counts_and_ids_match_direct_count(encoded) -> None:
    src, out = encoded
    ds = EncodedDataset.open(out)
    train = read_rows(src / "train.csv")
    slices = ds.schema.sparse_slices()
    for field in NUMERIC + CATEGORICAL:
        tokens = [_token(field, r[field]) for r in train]
        counter = Counter(t for t in tokens if t is not None)
        kept = sorted((v for v, c in counter.items() if c >= 2), key=lambda v: (-counter[v], v))
        assert vocab(out, field) == kept, field
        spec = ds.schema[field]
        assert spec.vocab_size == len(kept) + 2 and spec.source == (
            "numeric" if field in NUMERIC else "categorical"
        )
        ids = {v: i + 1 for i, v in enumerate(kept)}
        expect = np.array([0 if t is None else ids.get(t, spec.oov_id) for t in tokens])
        np.testing.assert_array_equal(ds["train"].sparse[:, slices[field]].ravel(), expect, err_msg=field)
        counts = ds.counts[field]
        assert counts.sum() == len(train)
        assert counts[0] == tokens.count(None)
        assert counts[spec.oov_id] == sum(c for c in counter.values() if c < 2)
        np.testing.assert_array_equal(counts[1 : spec.oov_id], [counter[v] for v in kept])
        assert np.all(np.diff(counts[1 : spec.oov_id]) <= 0)  # descending frequency


def test_unseen_values_in_valid_and_test_are_oov(encoded) -> None:
    src, out = encoded
    ds = EncodedDataset.open(out)
    for split in ("valid", "test"):
        rows = read_rows(src / f"{split}.csv")
        np.testing.assert_array_equal(ds[split].label, [float(r["label"]) for r in rows])
        for field in ("C3", "C12", "I5"):
            known = {v: i + 1 for i, v in enumerate(vocab(out, field))}
            oov = ds.schema[field].oov_id
            got = ds[split].sparse[:, ds.schema.sparse_slices()[field]].ravel()
            want = [0 if (t := _token(field, r[field])) is None else known.get(t, oov) for r in rows]
            np.testing.assert_array_equal(got, want)
    assert ds.schema.meta["rows"] == {"train": 160, "valid": 20, "test": 20}
    assert ds.schema.meta["split"]["method"] == "files"


def test_raw_tsv_and_csv_encode_identically(tmp_path) -> None:
    from tests.conftest import SHARED_DATA

    src = SHARED_DATA / "criteo_sample"
    if not src.exists():
        pytest.skip("shared criteo_sample not found")
    split = {"method": "random", "ratios": [0.7, 0.2, 0.1], "seed": 3}
    a = encode_dataset(
        criteo_config("criteo_tsv", split=split), src / "kaggle_format.txt", tmp_path / "a", progress=False
    )
    b = encode_dataset(
        criteo_config("csv", split=split), src / "criteo_sample.csv", tmp_path / "b", progress=False
    )
    assert a.rows == b.rows and sum(a.rows.values()) == 200
    da, db = EncodedDataset.open(tmp_path / "a"), EncodedDataset.open(tmp_path / "b")
    for s in ("train", "valid", "test"):
        np.testing.assert_array_equal(da[s].sparse, db[s].sparse)
        np.testing.assert_array_equal(da[s].label, db[s].label)
    for f in da.counts:
        np.testing.assert_array_equal(da.counts[f], db.counts[f])


def test_bucket_transform_edge_values() -> None:
    from ctrzip.data.values import bucket_numpy

    values = np.array([-5.7, -1.0, 0.0, 0.5, 1.0, 2.0, 2.0001, 3.0, 7.389, 10.0, 1e6, 3001.0])
    want = [_bucket(repr(float(v))) for v in values]
    np.testing.assert_array_equal(bucket_numpy(values).astype(int), want)


def test_dense_transform_is_normalized_on_train(tmp_path) -> None:
    from tests.conftest import SHARED_DATA

    src = SHARED_DATA / "criteo_sample"
    if not src.exists():
        pytest.skip("shared criteo_sample not found")
    cfg = criteo_config()
    cfg["features"][0] = {"name": "I1", "type": "numeric", "transform": "dense"}
    cfg["features"][1] = {"name": "I2", "type": "numeric", "transform": "dense", "normalizer": "minmax"}
    inputs = {s: src / f"{s}.csv" for s in ("train", "valid", "test")}
    encode_dataset(cfg, inputs, tmp_path, progress=False)
    ds = EncodedDataset.open(tmp_path)
    assert [f.name for f in ds.schema.dense_fields] == ["I1", "I2"] and ds.schema["I1"].kind == "dense"
    for split in ("train", "test"):
        raw1 = np.array([float(r["I1"]) if r["I1"] else np.nan for r in read_rows(src / f"{split}.csv")])
        raw2 = np.array([float(r["I2"]) for r in read_rows(src / f"{split}.csv")])
        tr1 = np.array([float(r["I1"]) for r in read_rows(src / "train.csv") if r["I1"]])
        tr2 = np.array([float(r["I2"]) for r in read_rows(src / "train.csv")])
        z = np.where(np.isnan(raw1), 0.0, (raw1 - tr1.mean()) / tr1.std())
        mm = (raw2 - tr2.min()) / (tr2.max() - tr2.min())
        np.testing.assert_allclose(ds[split].dense[:, 0], z, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ds[split].dense[:, 1], mm, rtol=1e-5, atol=1e-6)


def test_transform_new_file_uses_saved_vocab(encoded, tmp_path) -> None:
    src, out = encoded
    enc = Encoder.load(out)
    report = enc.transform(src / "test.csv", tmp_path, split="test")
    assert report.rows == {"test": 20}
    np.testing.assert_array_equal(
        EncodedDataset.open(tmp_path)["test"].sparse, EncodedDataset.open(out)["test"].sparse
    )
    assert EncodedDataset.open(tmp_path).schema == EncodedDataset.open(out).schema
