"""Numbers that do not fit their stored dtype are bad rows on every numeric path; nothing is
ever encoded non-finite."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import Encoder, encode_dataset
from ctrzip.data.readers import BadRowError, DataFormatError

from ._encode_helpers import criteo_config, write_csv

SEQ = {"method": "sequential", "ratios": [1.0, 0.0]}
GOOD = "0\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\t11\t12\t13\t" + "\t".join(f"c{i}" for i in range(26))


def _dense_cfg(fmt: str = "csv", policy: str = "error", **extra) -> dict:
    return {
        "name": "d",
        "format": fmt,
        "on_bad_rows": policy,
        "features": [{"name": "x", "type": "numeric"}],  # dense by default
        "split": SEQ,
        **extra,
    }


def _rows(n: int = 50, bad_at: int = 20, bad: str = "1e39") -> tuple[list[list], np.ndarray]:
    rng = np.random.default_rng(0)
    values = rng.normal(5, 2, n)
    rows = [[i % 2, f"{v:.6f}"] for i, v in enumerate(values)]
    rows[bad_at][1] = bad
    return rows, np.delete(np.array([float(r[1]) for r in rows if r[1] != bad]), [])


@pytest.mark.parametrize("bad", ["1e39", "-3.5e38", "inf", "1e400", "nan"])
def test_dense_value_beyond_float32_is_a_bad_row(tmp_path, bad) -> None:
    rows, kept = _rows(bad=bad)
    path = write_csv(tmp_path / "d.csv", ["label", "x"], rows)
    with pytest.raises(
        BadRowError, match=rf"d\.csv:22: column x: '{bad}' is not a finite number that fits float32"
    ):
        encode_dataset(_dense_cfg(), path, tmp_path / "e", progress=False)
    rep = encode_dataset(_dense_cfg(policy="skip"), path, tmp_path / "s", progress=False)
    assert rep.rows["train"] == 49 and rep.bad_rows["count"] == 1
    ds = EncodedDataset.open(tmp_path / "s")
    norm = ds.schema.meta["normalizers"]["x"]
    kept32 = kept.astype(np.float32).astype(np.float64)
    assert norm["shift"] == pytest.approx(kept32.mean()) and norm["scale"] == pytest.approx(kept32.std())
    np.testing.assert_allclose(ds["train"].dense[:, 0], (kept32 - kept32.mean()) / kept32.std(), atol=1e-5)


def test_keyed_and_generic_paths_reject_the_same_numbers(tmp_path) -> None:
    """Raw Criteo blocks of short values take the keyed path: '1e39' (4 bytes) is checked there."""
    cfg = criteo_config("criteo_tsv", on_bad_rows="skip", split=SEQ)
    cfg["features"][4] = {"name": "I5", "type": "numeric"}  # dense: float32
    lines = [GOOD] * 30
    lines[7] = GOOD.replace("\t5\t", "\t1e39\t", 1)  # I5, dense: does not fit float32
    lines[9] = GOOD.replace("\t2\t", "\t-3e9\t", 1)  # I2, bucketed: token below int32
    lines[11] = GOOD.replace("\t3\t", "\t1e39\t", 1)  # I3, bucketed: ln(1e39)^2 fits
    path = tmp_path / "raw.txt"
    path.write_text("\n".join(lines) + "\n")
    rep = encode_dataset(cfg, path, tmp_path / "o", progress=False)
    assert rep.rows["train"] == 28 and rep.bad_rows["count"] == 2
    assert [e.split("/")[-1] for e in rep.bad_rows["examples"]] == [
        "raw.txt:8: column I5: '1e39' is not a finite number that fits float32 (|v| <= 3.403e+38)",
        "raw.txt:10: column I2: '-3e9' is not a finite number >= -2147483647 (bucket tokens are int32)",
    ]
    vocab = json.loads((tmp_path / "o/vocab/I3.json").read_text())["values"]
    assert int(np.floor(np.log(1e39) ** 2)) in vocab


def test_libsvm_value_beyond_float32_is_a_bad_row(tmp_path) -> None:
    (tmp_path / "d.txt").write_text("1 u1:1 s:0.5\n0 u2:1 s:1e39\n1 u1:1 s:2.5\n")
    cfg = {
        "name": "l",
        "format": "libsvm",
        "features": [{"name": "user", "type": "categorical"}, {"name": "score", "type": "numeric"}],
        "split": SEQ,
    }
    with pytest.raises(
        BadRowError, match=r"d\.txt:2: column 1: '1e39' is not a finite number that fits float32"
    ):
        encode_dataset(cfg, tmp_path / "d.txt", tmp_path / "o", progress=False)


def test_parquet_numeric_columns_beyond_float32_are_bad_rows(tmp_path) -> None:
    df = pl.DataFrame({"label": [1, 0, 1, 0], "x": [1.0, 1e39, float("inf"), 3.0]})
    df.write_parquet(tmp_path / "d.parquet")
    rep = encode_dataset(
        _dense_cfg("parquet", "skip"), tmp_path / "d.parquet", tmp_path / "o", progress=False
    )
    assert rep.rows["train"] == 2 and rep.bad_rows["count"] == 2
    assert [e.split(":")[1] for e in rep.bad_rows["examples"]] == ["2", "3"]
    np.testing.assert_allclose(EncodedDataset.open(tmp_path / "o")["train"].dense[:, 0], [-1.0, 1.0])


def test_normalized_value_that_overflows_float32_is_an_error(tmp_path) -> None:
    """Fitted on a narrow training range, a huge (but float32) value elsewhere would encode
    as inf: refused, naming the field and the split."""
    train = write_csv(tmp_path / "t.csv", ["label", "x"], [[i % 2, 1e-3 * i] for i in range(10)])
    enc = Encoder(_dense_cfg())
    enc.fit_encode(train, tmp_path / "o", progress=False)
    scale = enc.normalizers["x"]["scale"]
    big = write_csv(tmp_path / "v.csv", ["label", "x"], [[0, 1.0], [1, 3e38]])
    assert 3e38 / scale > float(np.finfo(np.float32).max)
    with pytest.raises(
        DataFormatError, match=r"field x: raw value 3e\+38 in the valid split normalizes to a non-finite"
    ):
        enc.transform(big, tmp_path / "v", split="valid")


def test_every_encoded_dense_value_is_finite_after_mixed_bad_rows(tmp_path) -> None:
    rows = [[i % 2, str(v)] for i, v in enumerate([1.0, 2.0, "1e39", -1e38, "", "-inf", 7.5])]
    path = write_csv(tmp_path / "d.csv", ["label", "x"], rows)
    rep = encode_dataset(_dense_cfg(policy="skip"), path, tmp_path / "o", progress=False)
    assert rep.bad_rows["count"] == 2 and rep.rows["train"] == 5
    dense = EncodedDataset.open(tmp_path / "o")["train"].dense
    assert np.isfinite(dense).all() and dense[3, 0] == 0.0  # the missing value: the mean
