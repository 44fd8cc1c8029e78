"""Every reader: raw Avazu CSV (hour expansion), parquet, libsvm / libffm, sequences (ml100k)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import polars as pl
import pytest

from ctrzip.data.config import load_dataset_config
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import encode_dataset
from ctrzip.data.readers import DataFormatError

from ._encode_helpers import read_rows, vocab, write_csv

AVAZU = load_dataset_config("avazu")
AVAZU_HEADER = ["id", "click", "hour"] + [f.name for f in AVAZU.features[2:]]


def _decode(root, field: str, ids: np.ndarray) -> list:
    values = vocab(root, field)
    return [None if i == 0 else values[i - 1] if i <= len(values) else "OOV" for i in ids]


def test_avazu_hour_expansion_and_id_dropped(tmp_path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(300):
        hour = f"1410{21 + i % 9:02d}{i % 24:02d}"
        rows.append(
            [str(10**18 + i), i % 3 == 0, hour] + [f"v{rng.integers(0, 4)}" for _ in AVAZU_HEADER[3:]]
        )
    rows = [[r[0], int(r[1]), *r[2:]] for r in rows]
    path = write_csv(tmp_path / "train.csv", AVAZU_HEADER, rows)
    rep = encode_dataset("avazu", path, tmp_path / "out", progress=False, overrides=["min_count=1"])
    ds = EncodedDataset.open(tmp_path / "out")
    assert ds.schema.label == "click" and "id" not in ds.schema.names and len(ds.schema.names) == 23
    assert sum(rep.rows.values()) == 300
    sl = ds.schema.sparse_slices()
    labels = np.concatenate([ds[s].label for s in ds.splits])
    assert labels.mean() == pytest.approx(100 / 300)
    # decode hour_of_day / weekday of the training rows and compare with datetime
    train = ds["train"]
    hod = _decode(tmp_path / "out", "hour_of_day", train.sparse[:, sl["hour_of_day"]].ravel())
    wd = _decode(tmp_path / "out", "weekday", train.sparse[:, sl["weekday"]].ravel())
    c1 = _decode(tmp_path / "out", "C1", train.sparse[:, sl["C1"]].ravel())
    by_c1 = {}
    for r in rows:
        when = dt.datetime.strptime(r[2], "%y%m%d%H")
        by_c1.setdefault((f"{when.hour:02d}", str(when.isoweekday()), r[3]), 0)
    assert set(zip(hod, wd, c1, strict=True)) <= set(by_c1)
    assert set(hod) <= {f"{h:02d}" for h in range(24)} and len(set(wd)) > 1


def test_parquet_reader_matches_csv(tmp_path) -> None:
    cfg = {
        "name": "p",
        "format": "parquet",
        "features": [
            {"name": "user", "type": "categorical"},
            {"name": "age", "type": "numeric", "transform": "log_square_bucket"},
            {"name": "price", "type": "numeric", "transform": "dense"},
        ],
        "split": {"method": "sequential", "ratios": [0.5, 0.5]},
    }
    df = pl.DataFrame(
        {
            "label": [1, 0, 1, 0, 1, 1, 0, 0],
            "user": ["a", "b", "a", None, "c", "a", "b", "d"],
            "age": [10, 25, None, 3, 10, 1, 2, 30],
            "price": [1.5, 2.5, 3.5, None, 5.0, 6.0, 7.0, 8.0],
            "unused": list(range(8)),
        }
    )
    df.write_parquet(tmp_path / "d.parquet")
    df.write_csv(tmp_path / "d.csv")
    encode_dataset(cfg, tmp_path / "d.parquet", tmp_path / "pq", progress=False)
    encode_dataset({**cfg, "format": "csv"}, tmp_path / "d.csv", tmp_path / "csv", progress=False)
    a, b = EncodedDataset.open(tmp_path / "pq"), EncodedDataset.open(tmp_path / "csv")
    for s in ("train", "valid"):
        np.testing.assert_array_equal(a[s].sparse, b[s].sparse)
        np.testing.assert_allclose(a[s].dense, b[s].dense)
    assert vocab(tmp_path / "pq", "user") == ["a", "b"]  # train rows: a, b, a, missing
    assert vocab(tmp_path / "pq", "age") == [1, 5, 10]  # buckets of 3, 10, 25: one each, ties by value


LIBSVM_CFG = {
    "name": "l",
    "format": "libsvm",
    "features": [
        {"name": "user", "type": "categorical"},
        {"name": "item", "type": "categorical"},
        {"name": "score", "type": "numeric", "transform": "dense", "normalizer": "minmax"},
    ],
    "split": {"method": "sequential", "ratios": [1.0, 0.0]},
}


@pytest.mark.parametrize("keyed", [False, True])
def test_libsvm_and_libffm(tmp_path, keyed) -> None:
    rows = [(1, "u1", "i1", 0.5), (-1, "u2", "i1", 1.5), (0, "u1", "i2", 2.5), (1, "u1", "i1", 4.5)]
    if keyed:  # field order shuffled on purpose: fields are keyed, not positional
        lines = [f"{y} 1:{i}:1 0:{u}:1 2:s:{v}" for y, u, i, v in rows]
    else:
        lines = [f"{y} {u}:1 {i}:1 s:{v}" for y, u, i, v in rows]
    (tmp_path / "d.txt").write_text("\n".join(lines) + "\n")
    rep = encode_dataset(LIBSVM_CFG, tmp_path / "d.txt", tmp_path / "out", progress=False)
    ds = EncodedDataset.open(tmp_path / "out")
    assert rep.rows == {"train": 4, "valid": 0}
    np.testing.assert_array_equal(ds["train"].label, [1, 0, 0, 1])
    assert vocab(tmp_path / "out", "user") == ["u1", "u2"] and vocab(tmp_path / "out", "item") == ["i1", "i2"]
    np.testing.assert_array_equal(ds["train"].sparse, [[1, 1], [2, 1], [1, 2], [1, 1]])
    np.testing.assert_allclose(ds["train"].dense[:, 0], [0.0, 0.25, 0.5, 1.0])


def test_libsvm_bad_pairs(tmp_path) -> None:
    (tmp_path / "d.txt").write_text("1 u1:1 i1:1 s:1\n0 u2 i1:1 s:1\n1 u1:1 i1:1 s:1 extra:1\n")
    cfg = {**LIBSVM_CFG, "on_bad_rows": "skip"}
    rep = encode_dataset(cfg, tmp_path / "d.txt", tmp_path / "out", progress=False)
    assert rep.rows["train"] == 1 and rep.bad_rows["count"] == 2
    assert "d.txt:2: a pair is not feat:val" in rep.bad_rows["examples"][0]
    assert "d.txt:3: 4 pairs but the schema declares 3 fields" in rep.bad_rows["examples"][1]


def test_ml100k_sequence_and_oov(shared_data, tmp_path) -> None:
    src = shared_data / "ml100k_mini"
    cfg = {
        "name": "ml",
        "format": "csv",
        "features": [
            {"name": "user_id", "type": "categorical"},
            {"name": "item_id", "type": "categorical", "min_count": 2},
            {"name": "age", "type": "numeric"},
            {"name": "genres", "type": "sequence", "separator": "^", "max_len": 3},
        ],
        "split": {"method": "files"},
    }
    inputs = {s: src / f"{s}.csv" for s in ("train", "valid", "test")}
    encode_dataset(cfg, inputs, tmp_path, progress=False)
    ds = EncodedDataset.open(tmp_path)
    spec = ds.schema["genres"]
    assert spec.kind == "sequence" and spec.max_len == 3 and ds.schema.sparse_width == 5
    train = read_rows(src / "train.csv")
    # `{name: age, type: numeric}` is a dense value by default (FuxiCTR), z-scored on train
    assert ds.schema["age"].kind == "dense" and "age" not in ds.schema.sparse_slices()
    ages = np.array([float(r["age"]) for r in train])
    np.testing.assert_allclose(ds["train"].dense[:, 0], (ages - ages.mean()) / ages.std(), rtol=1e-4)
    tokens = Counter(g for r in train for g in r["genres"].split("^")[:3])
    kept = sorted(tokens, key=lambda v: (-tokens[v], v))
    assert vocab(tmp_path, "genres") == kept
    seq = ds["train"].sparse[:, ds.schema.sparse_slices()["genres"]]
    for r, row in zip(train[:200], seq[:200], strict=True):
        parts = r["genres"].split("^")[:3]
        assert [kept[i - 1] for i in row if i] == parts and list(row[len(parts) :]) == [0] * (3 - len(parts))
    counts = ds.counts["genres"]
    assert counts[0] == sum(3 - min(3, len(r["genres"].split("^"))) for r in train)  # pad slots
    # users in valid are almost all unseen in train (README: 99.75%) -> OOV
    users = ds["valid"].sparse[:, ds.schema.sparse_slices()["user_id"]].ravel()
    assert np.mean(users == ds.schema["user_id"].oov_id) > 0.99
    items = Counter(r["item_id"] for r in train)
    assert vocab(tmp_path, "item_id") == sorted(
        (v for v, c in items.items() if c >= 2), key=lambda v: (-items[v], v)
    )
    assert ds.counts["item_id"][ds.schema["item_id"].oov_id] == sum(c for c in items.values() if c < 2)


def test_reader_errors(tmp_path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    cfg = {"name": "x", "format": "csv", "features": [{"name": "a", "type": "categorical"}]}
    with pytest.raises(DataFormatError, match="empty.csv: file is empty"):
        encode_dataset(cfg, empty, tmp_path / "o1", progress=False)
    header_only = write_csv(tmp_path / "h.csv", ["label", "a"], [])
    with pytest.raises(DataFormatError, match="h.csv: no data rows"):
        encode_dataset(cfg, header_only, tmp_path / "o2", progress=False)
    missing = write_csv(tmp_path / "m.csv", ["label", "b"], [[1, "x"]])
    with pytest.raises(DataFormatError, match=r"m.csv: missing columns \['a'\] \(the file has: label, b\)"):
        encode_dataset(cfg, missing, tmp_path / "o3", progress=False)
    with pytest.raises(DataFormatError, match="input file not found"):
        encode_dataset(cfg, tmp_path / "nope.csv", tmp_path / "o4", progress=False)
    bad_pq = tmp_path / "x.parquet"
    bad_pq.write_text("not parquet")
    with pytest.raises(DataFormatError, match="not a readable parquet file"):
        encode_dataset({**cfg, "format": "parquet"}, bad_pq, tmp_path / "o5", progress=False)
