"""A quoted empty cell means missing, like an empty cell, for every field type and reader;
quoting faults (a field spanning lines, a stray quote) are bad rows that say so."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import encode_dataset
from ctrzip.data.readers import BadRowError

from ._encode_helpers import criteo_config, vocab

SEQ = {"method": "sequential", "ratios": [1.0, 0.0]}
ALL_TYPES = {
    "name": "q",
    "format": "csv",
    "features": [
        {"name": "c", "type": "categorical"},
        {"name": "n", "type": "numeric"},
        {"name": "b", "type": "numeric", "transform": "log_square_bucket"},
        {"name": "s", "type": "sequence", "separator": "|", "max_len": 2},
        {"name": "h", "type": "categorical", "source": "t", "derive": "hour_of_day"},
    ],
    "split": SEQ,
}
ROWS = [
    ["1", "a", "1.5", "10", "x|y", "14102105"],
    ["0", "{}", "{}", "{}", "{}", "{}"],  # every field missing
    ["1", "b", "2.5", "3", "y", "14102213"],
]


def _same(a, b) -> None:
    da, db = EncodedDataset.open(a), EncodedDataset.open(b)
    np.testing.assert_array_equal(da["train"].sparse, db["train"].sparse)
    np.testing.assert_array_equal(da["train"].dense, db["train"].dense)
    assert da.schema.meta["normalizers"] == db.schema.meta["normalizers"]


def test_quoted_empty_cell_is_missing_for_every_field_type(tmp_path) -> None:
    out = {}
    for name, empty in (("plain", ""), ("quoted", '""')):
        text = "label,c,n,b,s,t\n" + "".join(",".join(r).replace("{}", empty) + "\n" for r in ROWS)
        (tmp_path / f"{name}.csv").write_text(text)
        rep = encode_dataset(ALL_TYPES, tmp_path / f"{name}.csv", tmp_path / name, progress=False)
        assert rep.bad_rows["count"] == 0 and rep.rows["train"] == 3
        out[name] = tmp_path / name
    _same(out["plain"], out["quoted"])
    ds = EncodedDataset.open(out["quoted"])
    assert (ds["train"].sparse[1] == 0).all()  # missing = id 0 in every sparse column
    assert ds["train"].dense[1, 0] == 0.0  # missing dense = the training mean
    assert "" not in vocab(out["quoted"], "c")


def test_quoted_empty_cell_is_missing_in_criteo_tsv(tmp_path) -> None:
    good = "1\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\t11\t12\t13\t" + "\t".join(f"c{i}" for i in range(26))
    blank = good.replace("\t5\t", "\t{}\t", 1).replace("\tc3\t", "\t{}\t", 1)
    for name, empty in (("plain", ""), ("quoted", '""')):
        (tmp_path / f"{name}.txt").write_text(f"{good}\n{blank.format(empty, empty)}\n{good}\n")
        cfg = criteo_config("criteo_tsv", split=SEQ)
        rep = encode_dataset(cfg, tmp_path / f"{name}.txt", tmp_path / name, progress=False)
        assert rep.bad_rows["count"] == 0
    _same(tmp_path / "plain", tmp_path / "quoted")
    ds = EncodedDataset.open(tmp_path / "quoted")
    sl = ds.schema.sparse_slices()
    assert ds["train"].sparse[1, sl["I5"]][0] == 0 and ds["train"].sparse[1, sl["C4"]][0] == 0


def test_empty_string_in_parquet_is_missing(tmp_path) -> None:
    cfg = {**ALL_TYPES, "format": "parquet"}
    for name, empty in (("null", None), ("empty", "")):
        cols = list(zip(*[[None if v == "{}" else v for v in r] for r in ROWS], strict=True))
        frame = {k: list(v) for k, v in zip(["label", "c", "n", "b", "s", "t"], cols, strict=True)}
        for k in ("c", "s", "t", "n", "b"):
            frame[k] = [empty if v is None else v for v in frame[k]]
        pl.DataFrame(frame).write_parquet(tmp_path / f"{name}.parquet")
        encode_dataset(cfg, tmp_path / f"{name}.parquet", tmp_path / name, progress=False)
    _same(tmp_path / "null", tmp_path / "empty")


def test_empty_value_in_libsvm_is_missing(tmp_path) -> None:
    cfg = {
        "name": "l",
        "format": "libsvm",
        "features": [
            {"name": "user", "type": "categorical"},
            {"name": "item", "type": "categorical"},
            {"name": "score", "type": "numeric"},
        ],
        "split": SEQ,
    }
    (tmp_path / "absent.txt").write_text("1 u1:1 i1:1 s:0.5\n0 u2:1 i2:1\n1 u1:1 i1:1 s:2.5\n")
    (tmp_path / "empty.txt").write_text("1 u1:1 i1:1 s:0.5\n0 u2:1 i2:1 s:\n1 u1:1 i1:1 s:2.5\n")
    for name in ("absent", "empty"):
        rep = encode_dataset(cfg, tmp_path / f"{name}.txt", tmp_path / name, progress=False)
        assert rep.bad_rows["count"] == 0
    _same(tmp_path / "absent", tmp_path / "empty")


def test_quoted_field_spanning_lines_says_so(tmp_path) -> None:
    path = tmp_path / "nl.csv"
    path.write_text('label,c,n\n1,a,1\n0,"x\ny",2\n1,b,3\n')
    cfg = {**ALL_TYPES, "features": ALL_TYPES["features"][:2]}
    with pytest.raises(BadRowError, match=r"nl\.csv:3: a quoted field spans lines \(a newline inside quotes"):
        encode_dataset(cfg, path, tmp_path / "e", progress=False)
    rep = encode_dataset({**cfg, "on_bad_rows": "skip"}, path, tmp_path / "s", progress=False)
    assert rep.rows["train"] == 2 and rep.bad_rows["count"] == 2  # lines 3 and 4 hold the broken row
    assert vocab(tmp_path / "s", "c") == ["a", "b"]


def test_stray_quote_is_a_bad_row_with_its_reason(tmp_path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('label,c,n\n1,a,1\n0,ab"c,2\n1,"b",3\n')
    cfg = {**ALL_TYPES, "features": ALL_TYPES["features"][:2], "on_bad_rows": "skip"}
    rep = encode_dataset(cfg, path, tmp_path / "s", progress=False)
    assert rep.rows["train"] == 2 and rep.bad_rows["count"] == 1
    assert rep.bad_rows["examples"][0].endswith(
        "q.csv:3: misplaced quote '\"': a quoted field must be quoted whole, with inner quotes doubled"
    )
    assert vocab(tmp_path / "s", "c") == ["a", "b"]


def test_quoted_separators_do_not_hide_a_short_row(tmp_path) -> None:
    """The block's separator count matches (one row has a quoted comma, one a missing
    column): the short row must still be found, not padded with a missing value."""
    path = tmp_path / "q.csv"
    path.write_text('label,c,n\n1,"a,b",1\n0,c\n')
    cfg = {**ALL_TYPES, "features": ALL_TYPES["features"][:2]}
    with pytest.raises(BadRowError, match=r"q\.csv:3: expected 3 columns, got 2 \(first missing column: n\)"):
        encode_dataset(cfg, path, tmp_path / "e", progress=False)
