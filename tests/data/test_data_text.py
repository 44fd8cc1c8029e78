"""Text hygiene of real exports: compression, encodings, BOM, header whitespace, CRLF, ragged
rows; files whose rows are all bad say what they look like; an encode writing no rows fails."""

from __future__ import annotations

import bz2
import gzip
import lzma
import zipfile

import numpy as np
import pytest
import zstandard

from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import encode_dataset
from ctrzip.data.readers import BadRowError, DataFormatError

from ._encode_helpers import criteo_config, vocab

SEQ = {"method": "sequential", "ratios": [0.5, 0.5]}
GOOD = "0\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\t11\t12\t13\t" + "\t".join(f"c{i}" for i in range(26))
CSV = {
    "name": "t",
    "format": "csv",
    "features": [{"name": "a", "type": "categorical"}, {"name": "n", "type": "numeric"}],
    "split": SEQ,
}
COMPRESS = {
    "gz": gzip.compress,
    "zst": lambda b: zstandard.ZstdCompressor().compress(b),
    "bz2": bz2.compress,
    "xz": lzma.compress,
}


def _criteo_text(n: int = 40) -> bytes:
    rng = np.random.default_rng(1)
    lines = [
        GOOD.replace("c0", f"v{rng.integers(0, 9)}").replace("\t4\t", f"\t{rng.integers(0, 99)}\t", 1)
        for _ in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


def _same(a, b) -> None:
    da, db = EncodedDataset.open(a), EncodedDataset.open(b)
    assert list(da.splits) == list(db.splits)
    for s in da.splits:
        np.testing.assert_array_equal(da[s].sparse, db[s].sparse)
        np.testing.assert_array_equal(da[s].dense, db[s].dense)
        np.testing.assert_array_equal(da[s].label, db[s].label)


@pytest.mark.parametrize("kind", list(COMPRESS))
def test_compressed_input_is_read_directly(tmp_path, kind) -> None:
    raw = _criteo_text()
    (tmp_path / "plain.txt").write_bytes(raw)
    cut = raw.index(b"\n", len(raw) // 3) + 1  # two members / frames, as `cat a.gz b.gz` makes
    (tmp_path / f"c.txt.{kind}").write_bytes(COMPRESS[kind](raw[:cut]) + COMPRESS[kind](raw[cut:]))
    cfg = criteo_config("criteo_tsv", split=SEQ, block_mb=0.002)  # sequential: counts rows first
    encode_dataset(cfg, tmp_path / "plain.txt", tmp_path / "p", progress=False)
    rep = encode_dataset(cfg, tmp_path / f"c.txt.{kind}", tmp_path / "c", progress=False)
    assert rep.rows == {"train": 20, "valid": 20}
    _same(tmp_path / "p", tmp_path / "c")


def test_compression_is_recognized_by_content_not_name(tmp_path) -> None:
    text = b"label,a,n\n" + b"".join(f"{i % 2},x{i % 3},{i}\n".encode() for i in range(10))
    (tmp_path / "plain.csv").write_bytes(text)
    (tmp_path / "data.csv").write_bytes(gzip.compress(text))  # gzip without a .gz name
    encode_dataset(CSV, tmp_path / "plain.csv", tmp_path / "p", progress=False)
    encode_dataset(CSV, tmp_path / "data.csv", tmp_path / "c", progress=False)
    _same(tmp_path / "p", tmp_path / "c")


def test_bom_header_whitespace_and_crlf_read_like_a_clean_file(tmp_path) -> None:
    rows = [(i % 2, f"x{i % 3}", i) for i in range(10)]
    clean = "label,a,n\n" + "".join(f"{y},{a},{n}\n" for y, a, n in rows)
    messy = '\ufeff label ," a ", n\t\r\n' + "".join(f"{y},{a},{n}\r\n" for y, a, n in rows)
    (tmp_path / "clean.csv").write_text(clean)
    (tmp_path / "messy.csv").write_bytes(messy.encode("utf-8"))
    encode_dataset(CSV, tmp_path / "clean.csv", tmp_path / "c", progress=False)
    encode_dataset(CSV, tmp_path / "messy.csv", tmp_path / "m", progress=False)
    _same(tmp_path / "c", tmp_path / "m")
    assert vocab(tmp_path / "m", "a") == vocab(tmp_path / "c", "a")


def test_bom_in_a_headerless_file(tmp_path) -> None:
    raw = _criteo_text(10)
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + raw)
    rep = encode_dataset(
        criteo_config("criteo_tsv", split=SEQ), tmp_path / "bom.txt", tmp_path / "o", progress=False
    )
    assert rep.bad_rows["count"] == 0 and sum(rep.rows.values()) == 10


def test_invalid_utf8_is_a_bad_row_and_latin1_is_readable(tmp_path) -> None:
    text = "label,a,n\n1,caf\u00e9,1\n0,plain,2\n1,na\u00efve,3\n"
    path = tmp_path / "l1.csv"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(
        BadRowError, match=r"l1\.csv:2: invalid UTF-8 byte 0xe9 in column a .*set encoding: latin-1"
    ):
        encode_dataset(CSV, path, tmp_path / "e", progress=False)
    one = {"method": "sequential", "ratios": [1.0, 0.0]}
    rep = encode_dataset({**CSV, "on_bad_rows": "skip", "split": one}, path, tmp_path / "s", progress=False)
    assert sum(rep.rows.values()) == 1 and rep.bad_rows["count"] == 2
    rep = encode_dataset(
        {**CSV, "encoding": "latin-1", "split": {"method": "sequential", "ratios": [1.0, 0.0]}},
        path,
        tmp_path / "l",
        progress=False,
    )
    assert rep.bad_rows["count"] == 0 and vocab(tmp_path / "l", "a") == ["caf\u00e9", "na\u00efve", "plain"]


def test_latin1_header(tmp_path) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes("label,a,n,d\u00e9j\u00e0\n1,x,1,q\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"h\.csv:1: header is not UTF-8 text .*set encoding: latin-1"):
        encode_dataset(CSV, path, tmp_path / "e", progress=False)
    cfg = {**CSV, "encoding": "latin-1", "split": {"method": "sequential", "ratios": [1.0, 0.0]}}
    assert encode_dataset(cfg, path, tmp_path / "o", progress=False).rows["train"] == 1


def test_invalid_utf8_in_libsvm_is_a_bad_row_not_replaced(tmp_path) -> None:
    (tmp_path / "d.txt").write_bytes(b"1 u1:1 s:1\n0 u\xe9:1 s:2\n1 u2:1 s:3\n")
    cfg = {
        "name": "l",
        "format": "libsvm",
        "on_bad_rows": "skip",
        "features": [{"name": "user", "type": "categorical"}, {"name": "s", "type": "numeric"}],
        "split": {"method": "sequential", "ratios": [1.0, 0.0]},
    }
    rep = encode_dataset(cfg, tmp_path / "d.txt", tmp_path / "o", progress=False)
    assert rep.rows["train"] == 2 and "d.txt:2: invalid UTF-8 byte 0xe9" in rep.bad_rows["examples"][0]
    assert vocab(tmp_path / "o", "user") == ["u1", "u2"]
    rep = encode_dataset({**cfg, "encoding": "latin-1"}, tmp_path / "d.txt", tmp_path / "l", progress=False)
    assert rep.rows["train"] == 3 and "u\u00e9" in vocab(tmp_path / "l", "user")


@pytest.mark.parametrize("block_mb", [32.0, 0.001])
def test_wrong_column_counts_inside_one_block(tmp_path, block_mb) -> None:
    """39 then 41 columns: the separator total matches two good rows; both are bad rows."""
    lines = [GOOD, GOOD.rsplit("\t", 1)[0], GOOD + "\textra", GOOD]
    (tmp_path / "r.txt").write_text("\n".join(lines) + "\n")
    cfg = criteo_config("criteo_tsv", split=SEQ, block_mb=block_mb)
    with pytest.raises(BadRowError, match=r"r\.txt:2: expected 40 columns, got 39"):
        encode_dataset(cfg, tmp_path / "r.txt", tmp_path / "e", progress=False)
    rep = encode_dataset({**cfg, "on_bad_rows": "skip"}, tmp_path / "r.txt", tmp_path / "s", progress=False)
    assert sum(rep.rows.values()) == 2 and rep.bad_rows["count"] == 2
    assert "r.txt:3: expected 40 columns (label..C26), got 41" in rep.bad_rows["examples"][1]


@pytest.mark.parametrize(
    ("content", "hint"),
    [
        ("comma", r"its lines have 40 columns when split on ',', not on tab"),
        ("header", r"line 1 looks like a header \('label\\tI1\\tI2'"),
        ("zip", r"the file is a zip archive \(extract it first\)"),
        ("latin1", r"it is not UTF-8 text \(byte 0xe9\): set encoding: latin-1"),
        ("utf16", r"the file is UTF-16 text \(convert it to UTF-8"),
        ("cr", r"its lines end with a carriage return only"),
    ],
)
def test_all_bad_first_rows_say_what_the_file_looks_like(tmp_path, content, hint) -> None:
    path = tmp_path / "raw.txt"
    if content == "comma":
        path.write_text("\n".join([GOOD.replace("\t", ",")] * 5) + "\n")
    elif content == "header":
        path.write_text(
            "\t".join(["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]) + "\n"
        )
    elif content == "zip":
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("train.txt", _criteo_text(5))
    elif content == "utf16":
        path.write_text("\n".join([GOOD] * 5) + "\n", encoding="utf-16")
    elif content == "cr":
        path.write_bytes(("\r".join([GOOD] * 5) + "\r").encode())
    else:
        path.write_bytes("\n".join([GOOD.replace("c3", "\u00e9t\u00e9")] * 5).encode("latin-1") + b"\n")
    cfg = criteo_config("criteo_tsv", split=SEQ)
    with pytest.raises(BadRowError, match=hint):  # error policy: the first bad row, with the hint
        encode_dataset(cfg, path, tmp_path / "e", progress=False)
    with pytest.raises(
        DataFormatError, match=rf"raw\.txt: all \d+ rows are bad .*the start of the file: .*{hint}"
    ):
        encode_dataset({**cfg, "on_bad_rows": "skip"}, path, tmp_path / "s", progress=False)


def test_header_only_file_is_an_error(tmp_path) -> None:
    (tmp_path / "h.csv").write_text("label,a,n\n")
    for policy in ("error", "skip"):
        with pytest.raises(DataFormatError, match=r"h\.csv: no data rows after the header line"):
            encode_dataset(
                {**CSV, "on_bad_rows": policy}, tmp_path / "h.csv", tmp_path / policy, progress=False
            )


def test_utf16_csv_says_so(tmp_path) -> None:
    (tmp_path / "u.csv").write_text("label,a,n\n1,x,1\n", encoding="utf-16")
    with pytest.raises(DataFormatError, match=r"u\.csv: the file is UTF-16 text"):
        encode_dataset(CSV, tmp_path / "u.csv", tmp_path / "o", progress=False)


def test_gzip_of_nothing_is_an_error(tmp_path) -> None:
    (tmp_path / "e.csv.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(DataFormatError, match=r"e\.csv\.gz: file is empty"):
        encode_dataset(CSV, tmp_path / "e.csv.gz", tmp_path / "o", progress=False)


def test_empty_training_split_is_an_error(tmp_path) -> None:
    (tmp_path / "d.csv").write_text("label,a,n\n1,x,1\n0,y,2\n")
    cfg = {**CSV, "split": {"method": "sequential", "ratios": [0.0, 1.0]}}
    with pytest.raises(DataFormatError, match=r"the train split is empty \(train 0, valid 2\)"):
        encode_dataset(cfg, tmp_path / "d.csv", tmp_path / "o", progress=False)


def test_no_rows_in_one_of_several_files_is_an_error(tmp_path) -> None:
    (tmp_path / "train.csv").write_text("label,a,n\n1,x,1\n0,y,2\n")
    (tmp_path / "valid.csv").write_text("label,a,n\n2,x,1\n")
    cfg = {**CSV, "on_bad_rows": "skip", "split": {"method": "files"}}
    inputs = {"train": tmp_path / "train.csv", "valid": tmp_path / "valid.csv"}
    with pytest.raises(
        DataFormatError, match=r"valid\.csv: all 1 rows are bad \(first: .*valid\.csv:2: column label"
    ):
        encode_dataset(cfg, inputs, tmp_path / "o", progress=False)


@pytest.mark.parametrize("kind", list(COMPRESS))
def test_truncated_compressed_input_is_a_clear_error(tmp_path, kind) -> None:
    data = COMPRESS[kind](_criteo_text(400))
    (tmp_path / "t.txt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"t\.txt: the \w+ data is corrupt or truncated"):
        encode_dataset(
            criteo_config("criteo_tsv", split=SEQ), tmp_path / "t.txt", tmp_path / "o", progress=False
        )


def test_skipped_header_line_in_a_headerless_file_is_noted(tmp_path) -> None:
    header = "\t".join(["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)])
    (tmp_path / "raw.txt").write_bytes(header.encode() + b"\n" + _criteo_text(10))
    cfg = criteo_config("criteo_tsv", split=SEQ, on_bad_rows="skip")
    rep = encode_dataset(cfg, tmp_path / "raw.txt", tmp_path / "o", progress=False)
    assert rep.bad_rows["count"] == 1 and sum(rep.rows.values()) == 10
    (note,) = rep.bad_rows["notes"]
    assert note.endswith(
        "raw.txt: the first 1 rows are bad; line 1 looks like a header ('label\\tI1\\tI2'...): "
        "this format has no header line"
    )
    (tmp_path / "ok.txt").write_bytes(_criteo_text(10))
    assert encode_dataset(cfg, tmp_path / "ok.txt", tmp_path / "o3", progress=False).bad_rows["notes"] == []
