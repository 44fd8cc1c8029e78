"""Fuzzed raw files: random rows, random corruptions, random block sizes, both bad-row policies.

Whatever the bytes, encoding either succeeds with rows in = rows written + rows reported
skipped (and finite, in-range outputs), or raises a ``UserError`` that names the file;
never a raw Polars / Python exception.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import encode_dataset
from ctrzip.data.readers import BadRowError, DataFormatError

TOKENS = ["a", "b", "caf\u00e9", "x y", "7", "-1", "0x1f", "\u4e2d"]
HUGE = ["1e39", "-1e39", "-1e20", "inf", "nan", "1e400", "3.5e38"]

GENERIC = {  # sequence + derived field: the generic (Polars) path only
    "name": "fz",
    "format": "csv",
    "features": [
        {"name": "c", "type": "categorical"},
        {"name": "n", "type": "numeric"},
        {"name": "b", "type": "numeric", "transform": "log_square_bucket"},
        {"name": "s", "type": "sequence", "separator": "|", "max_len": 3},
        {"name": "h", "type": "categorical", "source": "t", "derive": "hour_of_day"},
    ],
    "split": {"method": "sequential", "ratios": [1.0, 0.0]},
}
KEYED = {  # scalar fields, tab-separated: blocks of short ASCII values take the keyed path
    "name": "fk",
    "format": "csv",
    "separator": "\t",
    "features": [
        {"name": "c", "type": "categorical"},
        {"name": "n", "type": "numeric"},
        {"name": "b", "type": "numeric", "transform": "log_square_bucket"},
        {"name": "w", "type": "categorical", "source": "t", "derive": "weekday"},
    ],
    "split": {"method": "sequential", "ratios": [1.0, 0.0]},
}


def _row(rng: np.random.Generator, sequence: bool) -> list[str]:
    def maybe(v: str) -> str:
        return "" if rng.random() < 0.1 else v

    row = [
        str(int(rng.random() < 0.4)),
        maybe(str(rng.choice(TOKENS))),
        maybe(f"{rng.normal(0, 100):.3f}"),
        maybe(str(int(rng.integers(-3, 10_000)))),
    ]
    if sequence:
        row.append(maybe("|".join(rng.choice(TOKENS[:4], int(rng.integers(0, 5))))))
    row.append(maybe(f"1410{21 + int(rng.integers(0, 9)):02d}{int(rng.integers(0, 24)):02d}"))
    return row


def _mutate(rng: np.random.Generator, line: bytes, sep: bytes) -> bytes:
    """One random corruption of a raw line (without its newline)."""
    cells = line.split(sep)
    kind = int(rng.integers(0, 11))
    i = int(rng.integers(0, len(cells)))
    pos = int(rng.integers(0, len(line) + 1))
    if kind == 0:  # invalid UTF-8 / Latin-1 bytes
        return line[:pos] + bytes([int(rng.choice([0xFF, 0xE9, 0xC3, 0x80]))]) + line[pos:]
    if kind == 1:  # extra separator
        return line[:pos] + sep + line[pos:]
    if kind == 2 and sep in line:  # missing separator
        cut = line.index(sep, min(pos, line.rindex(sep)))
        return line[:cut] + line[cut + 1 :]
    if kind == 3:  # quoted cell, or a quoted empty cell
        cells[i] = b'"' + cells[i] + b'"' if rng.random() < 0.5 else b'""'
    elif kind == 4:  # a stray quote
        return line[:pos] + b'"' + line[pos:]
    elif kind == 5:  # huge / non-finite numbers
        cells[int(rng.integers(1, 4))] = str(rng.choice(HUGE)).encode()
    elif kind == 6:  # a newline inside a quoted cell
        cells[i] = b'"' + cells[i] + b"\n" + cells[i] + b'"'
    elif kind == 7:  # CRLF
        return line + b"\r"
    elif kind == 8:  # a blank line
        return b""
    elif kind == 9:  # NUL byte
        return line[:pos] + b"\x00" + line[pos:]
    else:  # a long value (not keyable) or a bad label
        cells[i if rng.random() < 0.5 else 0] = b"2" if i == 0 else b"v" * 12
    return sep.join(cells)


def _fuzz_file(rng: np.random.Generator, path, cfg: dict, sequence: bool) -> int:
    """Write a corrupted file; returns its number of data lines (rows in)."""
    sep = (cfg.get("separator") or ",").encode()
    names = ["label", "c", "n", "b", *(["s"] if sequence else []), "t"]
    lines = []
    for _ in range(int(rng.integers(1, 60))):
        line = sep.join(v.encode("utf-8") for v in _row(rng, sequence))
        if rng.random() < 0.25:
            line = _mutate(rng, line, sep)
        lines.append(line)
    body = b"\n".join(lines) + (b"\n" if rng.random() < 0.9 else b"")
    data = sep.join(n.encode() for n in names) + b"\n" + body
    if rng.random() < 0.15:
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(gzip.compress(data) if rng.random() < 0.15 else data)
    return body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)


@pytest.mark.parametrize("seed", range(3))
def test_fuzzed_files_never_crash_and_account_for_every_row(tmp_path, seed) -> None:
    rng = np.random.default_rng(seed)
    outcomes = {"ok": 0, "user_error": 0}
    for k in range(12):
        sequence = rng.random() < 0.5
        policy = "skip" if rng.random() < 0.7 else "error"
        block_mb = float(rng.choice([0.001, 0.002, 0.01, 1.0]))
        cfg = {**(GENERIC if sequence else KEYED), "on_bad_rows": policy, "block_mb": block_mb}
        path = tmp_path / f"f{k}.csv"
        rows_in = _fuzz_file(rng, path, cfg, sequence)
        out = tmp_path / f"o{k}"
        try:
            rep = encode_dataset(cfg, path, out, progress=False)
        except (BadRowError, DataFormatError) as err:
            assert str(path) in str(err) or cfg["name"] in str(err), err
            outcomes["user_error"] += 1
            continue
        outcomes["ok"] += 1
        written = sum(rep.rows.values())
        assert written + rep.bad_rows["count"] == rows_in, (path.read_bytes()[:2000], rep)
        assert policy == "skip" or rep.bad_rows["count"] == 0
        ds = EncodedDataset.open(out)
        split = ds["train"]
        assert np.isfinite(split.dense).all() and set(np.unique(split.label)) <= {0.0, 1.0}
        for f in ds.schema.sparse_fields:
            ids = split.sparse[:, ds.schema.sparse_slices()[f.name]]
            assert ids.min() >= 0 and ids.max() < f.vocab_size
        meta = json.loads((out / "feature_map.json").read_text())["meta"]
        assert meta["bad_rows"]["count"] == rep.bad_rows["count"]
    assert outcomes["ok"] > 0


LIBSVM = {
    "name": "fl",
    "format": "libsvm",
    "features": [
        {"name": "user", "type": "categorical"},
        {"name": "item", "type": "categorical"},
        {"name": "score", "type": "numeric"},
    ],
    "split": {"method": "sequential", "ratios": [1.0, 0.0]},
}
LIBSVM_JUNK = [b"\xff", b"\xe9", b":", b" ", b'"', b"1e39", b"\x00", b"\r", b"\n"]


@pytest.mark.parametrize("seed", range(2))
def test_fuzzed_libsvm_never_crashes_and_accounts_for_every_row(tmp_path, seed) -> None:
    rng = np.random.default_rng(100 + seed)
    for k in range(10):
        keyed = rng.random() < 0.5
        lines = []
        for _ in range(int(rng.integers(1, 40))):
            y, u, i, v = (
                rng.choice(["1", "0", "-1", "+1"]),
                rng.integers(0, 5),
                rng.integers(0, 5),
                rng.normal(),
            )
            line = f"{y} 0:u{u}:1 1:i{i}:1 2:s:{v:.3f}" if keyed else f"{y} u{u}:1 i{i}:1 s:{v:.3f}"
            raw = line.encode()
            if rng.random() < 0.3:
                pos = int(rng.integers(0, len(raw) + 1))
                raw = raw[:pos] + LIBSVM_JUNK[int(rng.integers(0, len(LIBSVM_JUNK)))] + raw[pos:]
            lines.append(raw)
        body = b"\n".join(lines) + b"\n"
        path = tmp_path / f"f{k}.txt"
        path.write_bytes(body)
        cfg = {**LIBSVM, "on_bad_rows": "skip" if rng.random() < 0.7 else "error", "block_mb": 0.001}
        try:
            rep = encode_dataset(cfg, path, tmp_path / f"o{k}", progress=False)
        except (BadRowError, DataFormatError) as err:
            assert str(path) in str(err) or cfg["name"] in str(err), err
            continue
        assert sum(rep.rows.values()) + rep.bad_rows["count"] == body.count(b"\n")
        assert np.isfinite(EncodedDataset.open(tmp_path / f"o{k}")["train"].dense).all()
