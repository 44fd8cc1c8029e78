"""The row encoder gives the encoded dataset's ids byte for byte (issue 11, item 2)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from ctrzip.data.config import load_dataset_config
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import Encoder, encode_dataset
from ctrzip.data.readers import BadRowError, BadRows
from ctrzip.serving.rows import RowEncoder

from ._fixtures import criteo_files, ml100k_files, shared


def _encode_file(enc: RowEncoder, path, policy="error", **kw):  # type: ignore[no-untyped-def]
    bad = BadRows(policy)
    parts = [rows for rows, _ in enc.iter_file(path, bad, **kw)]
    cat = lambda k: np.concatenate([getattr(p, k) for p in parts])  # noqa: E731
    return cat("sparse"), cat("dense"), cat("rows"), bad


@pytest.fixture(scope="module")
def criteo(tmp_path_factory) -> EncodedDataset:  # type: ignore[no-untyped-def]
    return criteo_files(shared(), tmp_path_factory.mktemp("c") / "enc")


@pytest.fixture(scope="module")
def ml(tmp_path_factory) -> EncodedDataset:  # type: ignore[no-untyped-def]
    return ml100k_files(shared(), tmp_path_factory.mktemp("m") / "enc")


@pytest.mark.parametrize("split", ["train", "valid", "test"])
@pytest.mark.parametrize("block_mb", [8.0, 0.002])
def test_criteo_csv_ids_equal_the_encoded_splits(criteo, split, block_mb) -> None:
    enc = RowEncoder(Encoder.load(criteo.root))
    sparse, dense, rows, _ = _encode_file(enc, shared() / "criteo_sample" / f"{split}.csv", block_mb=block_mb)
    assert (
        sparse.dtype == np.int32 and sparse.tobytes() == np.ascontiguousarray(criteo[split].sparse).tobytes()
    )
    assert dense.tobytes() == np.ascontiguousarray(criteo[split].dense).tobytes()
    assert np.array_equal(rows, np.arange(len(rows)))
    if split != "train":  # unseen values -> OOV, empty cells -> 0, both present
        oov = np.array([f.vocab_size - 1 for f in criteo.schema.sparse_fields])
        assert (sparse == oov).any() and (sparse == 0).any()


@pytest.mark.parametrize("split", ["train", "valid"])
def test_ml100k_sequence_dense_bucket_and_oov_equal_the_encoded_splits(ml, split) -> None:
    enc = RowEncoder(Encoder.load(ml.root))
    sparse, dense, _, _ = _encode_file(enc, shared() / "ml100k_mini" / f"{split}.csv")
    assert sparse.tobytes() == np.ascontiguousarray(ml[split].sparse).tobytes()
    assert dense.tobytes() == np.ascontiguousarray(ml[split].dense).tobytes()
    user = ml.schema.sparse_slices()["user_id"]
    if split == "valid":  # ml100k valid users are almost all unseen in train
        assert (sparse[:, user] == ml.schema.fields[0].vocab_size - 1).mean() > 0.9


def _criteo_tsv_dataset(tmp_path):  # type: ignore[no-untyped-def]
    raw = shared() / "criteo_sample" / "kaggle_format.txt"
    cfg = load_dataset_config("criteo").to_dict()
    cfg.update(min_count=2, split={"method": "files"})
    encode_dataset(cfg, {"train": raw}, tmp_path / "enc", progress=False)  # the keyed fast path
    return raw, EncodedDataset.open(tmp_path / "enc")


def test_criteo_tsv_with_and_without_label_and_as_parquet(tmp_path) -> None:
    raw, ds = _criteo_tsv_dataset(tmp_path)
    enc = RowEncoder(Encoder.load(ds.root))
    want = np.ascontiguousarray(ds["train"].sparse).tobytes()
    assert _encode_file(enc, raw)[0].tobytes() == want
    # Kaggle's test file has no label column: 39 fields
    no_label = tmp_path / "test.txt"
    no_label.write_text("".join(line.split("\t", 1)[1] for line in raw.read_text().splitlines(True)))
    assert _encode_file(enc, no_label)[0].tobytes() == want
    # the same rows as parquet (typed columns: numbers as numbers, missing as null)
    frame = pl.read_csv(
        raw, separator="\t", has_header=False, new_columns=enc.columns[:0] + ["label", *enc.columns]
    )
    frame.write_parquet(tmp_path / "rows.parquet")
    assert _encode_file(enc, tmp_path / "rows.parquet")[0].tobytes() == want
    got = enc.encode_frame(frame, BadRows("error"))  # an in-memory frame as well
    assert got.sparse.tobytes() == want and np.array_equal(got.dense, np.asarray(ds["train"].dense))


def test_bad_rows_raise_with_file_line_column_or_are_skipped_and_counted(criteo, tmp_path) -> None:
    src = shared() / "criteo_sample" / "test.csv"
    lines = src.read_text().splitlines(True)
    broken = list(lines)
    broken[3] = broken[3].replace(",", ",abc", 2).replace(",abc", ",", 1)  # I2 = abc...: not a number
    path = tmp_path / "bad.csv"
    path.write_text("".join(broken))
    enc = RowEncoder(Encoder.load(criteo.root))
    with pytest.raises(BadRowError, match=rf"{path}:4: column I2: 'abc\S*' is not a finite number"):
        _encode_file(enc, path)
    broken[7] = "1,2,3\n"  # wrong column count
    path.write_text("".join(broken))
    with pytest.raises(BadRowError, match=rf"{path}:8: expected 40 columns, got 3"):
        _encode_file(enc, path)
    sparse, _, rows, bad = _encode_file(enc, path, policy="skip")
    assert bad.count == 2 and [e.split(": ")[0] for e in bad.examples] == [f"{path}:4", f"{path}:8"]
    keep = np.setdiff1d(np.arange(len(lines) - 1), [2, 6])
    assert np.array_equal(rows, keep)
    assert sparse.tobytes() == np.ascontiguousarray(criteo["test"].sparse[keep]).tobytes()


def test_missing_column_and_unknown_format_name_the_file(criteo, tmp_path) -> None:
    from ctrzip.data.readers import DataFormatError

    path = tmp_path / "few.csv"
    path.write_text("I1,C1\n1,a\n")
    enc = RowEncoder(Encoder.load(criteo.root))
    with pytest.raises(DataFormatError, match=rf"{path}: missing columns \['I2'"):
        _encode_file(enc, path)
    with pytest.raises(DataFormatError, match=rf"{path}: unknown format 'xlsx'"):
        _encode_file(enc, path, fmt="xlsx")
    with pytest.raises(DataFormatError, match=r"frame: missing columns \['I1'"):
        enc.encode_frame(pl.DataFrame({"x": [1]}), BadRows("error"), "frame")
