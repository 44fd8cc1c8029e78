"""The keyed fast path: exact keys of short fields, the key -> code hash table, and encodes
that must be identical to the generic Polars path (blocks of both kinds mixed in one file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ctrzip.data import keycoder
from ctrzip.data import keyed as keyed_mod
from ctrzip.data.columns import ColumnPlan
from ctrzip.data.encode import encode_dataset
from ctrzip.data.keycoder import KeyCoder, decode_keys
from ctrzip.data.readers import delimited
from ctrzip.data.readers.fields import field_keys

from ._encode_helpers import criteo_config

ALPHABET = np.array(list(b"abcxyz019 .-_ABC"), dtype=np.uint8)


def _text_key(text: str) -> int:
    return int.from_bytes(text.encode().ljust(8, b"\0"), "little")


@pytest.mark.parametrize("place_rows", [1 << 20, 7])
def test_key_coder_codes_are_stable_dense_and_exact(monkeypatch, place_rows) -> None:
    monkeypatch.setattr(keycoder, "_PLACE_ROWS", place_rows)  # 7: inserts and rehashes in slices
    rng = np.random.default_rng(0)
    coder = KeyCoder(bits=2)  # tiny: forces collisions, walks and several rehashes
    seen: dict[int, int] = {}
    pool = np.concatenate([rng.integers(1, 2**63, 3000, dtype=np.uint64), np.arange(1, 500, dtype=np.uint64)])
    for _ in range(8):
        keys = rng.choice(pool, 4000)
        keys[rng.random(4000) < 0.05] = 0
        codes = coder.encode(keys)
        assert codes.dtype == np.int32 and np.all(codes[keys == 0] == 0)
        for k, c in zip(keys.tolist(), codes.tolist(), strict=True):
            if k:
                assert seen.setdefault(k, c) == c
        assert np.array_equal(coder.keys[codes[keys != 0] - 1], keys[keys != 0])
    assert sorted(seen.values()) == list(range(1, coder.size + 1)) and coder.size == len(seen)
    assert coder.size <= keycoder._MAX_LOAD * coder._home  # the load bound that sizes the table


def test_decode_keys_round_trips_short_ascii() -> None:
    texts = ["", "a", "1fd5ff43", "-12", "x y", "ABCDEFGH", ""]
    keys = np.array([_text_key(t) for t in texts], dtype=np.uint64)
    assert decode_keys(keys).to_list() == [t or None for t in texts]


def _random_lines(rng: np.random.Generator, n: int, cols: int, max_len: int = 8) -> list[list[str]]:
    lens = rng.integers(0, max_len + 1, size=(n, cols))
    return [["".join(map(chr, rng.choice(ALPHABET, k))) for k in row] for row in lens]


@pytest.mark.parametrize("want", [[0, 1, 2, 3, 4], [3, 0, 3, 4]])
def test_field_keys_match_the_polars_parse(want) -> None:
    rng = np.random.default_rng(1)
    rows = _random_lines(rng, 300, 5)
    rows[-1][-1] = "z"  # a short last field ends one byte before the end of the block
    data = "".join("\t".join(r) + "\n" for r in rows).encode()
    keys = field_keys(data, "\t", len(rows), 5, want, None)
    assert keys is not None and keys.shape == (300, 5 if len(want) == 5 else 4)
    names = [f"c{i}" for i in range(5)]
    frame = pl.read_csv(
        data, has_header=False, separator="\t", quote_char=None, schema=dict.fromkeys(names, pl.String)
    )
    for j, col in enumerate(want):
        assert decode_keys(np.ascontiguousarray(keys[:, j])).to_list() == frame[names[col]].to_list()
    tiny = field_keys(b"1\tab\n", "\t", 1, 2, [1, 0], None)  # shorter than one word
    assert tiny is not None and decode_keys(tiny[0]).to_list() == ["ab", "1"]


@pytest.mark.parametrize(
    ("data", "quote"),
    [
        (b'1\t"a"\n0\tb\n', '"'),  # quoting in use: only the full parser reads it right
        (b"1\ta\r\n0\tb\r\n", None),
        ("1\t\u00e9\n0\tb\n".encode(), None),
        (b"1\ta\x00\n0\tb\n", None),
        (b"1\ta\tx\n0\n", None),  # two lines of wrong width, right separator total
        (b"1\t123456789\n0\tb\n", None),  # a field longer than a key
    ],
)
def test_field_keys_decline_what_they_cannot_read_exactly(data, quote) -> None:
    assert field_keys(data, "\t", data.count(b"\n"), 2, [0, 1], quote) is None


def _encode_both(monkeypatch, cfg, inputs, tmp_path: Path) -> tuple[Path, Path, int]:
    """Encode with the keyed path and with it disabled; returns both folders and the number
    of blocks the keyed path coded."""
    used = []
    apply = keyed_mod.KeyedCoder.apply

    def spy(self, table):
        out = apply(self, table)
        used.append(out is not None)
        return out

    with monkeypatch.context() as m:
        m.setattr(keyed_mod.KeyedCoder, "apply", spy)
        encode_dataset(cfg, inputs, tmp_path / "keyed", progress=False)
    with monkeypatch.context() as m:
        m.setattr(delimited, "field_keys", lambda *a, **k: None)
        encode_dataset(cfg, inputs, tmp_path / "generic", progress=False)
    return tmp_path / "keyed", tmp_path / "generic", sum(used)


def _assert_same_dataset(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.glob("*.npy"))
    assert names == sorted(p.name for p in b.glob("*.npy")) and names
    for name in names:
        np.testing.assert_array_equal(np.load(a / name), np.load(b / name), err_msg=name)
    for vocab in sorted((a / "vocab").glob("*.json")):
        assert json.loads(vocab.read_text()) == json.loads((b / "vocab" / vocab.name).read_text()), vocab.name
    ca, cb = np.load(a / "counts.npz"), np.load(b / "counts.npz")
    assert ca.files == cb.files and all(np.array_equal(ca[k], cb[k]) for k in ca.files)
    meta_a, meta_b = (json.loads((p / "feature_map.json").read_text())["meta"] for p in (a, b))
    for key in ("rows", "bad_rows", "normalizers"):
        assert meta_a[key] == meta_b[key], key


def test_criteo_keyed_and_generic_encode_identically(monkeypatch, tmp_path) -> None:
    rng = np.random.default_rng(2)
    n = 3000
    lines = []
    for i in range(n):
        ints = [str(v) if rng.random() > 0.2 else "" for v in rng.integers(-3, 5000, 13)]
        if i == 1700:
            ints[4] = "123456789"  # 9 bytes: this block goes through the generic path
        cats = [f"{int(v):08x}" if rng.random() > 0.1 else "" for v in rng.zipf(1.4, 26) % 5000]
        lines.append("\t".join([str(int(rng.random() < 0.25)), *ints, *cats]))
    path = tmp_path / "raw.txt"
    path.write_text("\n".join(lines) + "\n")
    cfg = criteo_config("criteo_tsv", min_count=2, block_mb=0.05, split={"method": "random", "seed": 4})
    cfg["features"][2] = {"name": "I3", "type": "numeric", "transform": "dense"}
    a, b, keyed_blocks = _encode_both(monkeypatch, cfg, path, tmp_path)
    assert keyed_blocks >= 5
    _assert_same_dataset(a, b)


def test_avazu_like_with_bad_rows_and_quotes_encodes_identically(monkeypatch, tmp_path) -> None:
    rng = np.random.default_rng(3)
    header = ["id", "click", "hour", "site", "n"]
    rows = []
    for i in range(2500):
        hour = f"1410{21 + i % 9:02d}{i % 24:02d}"
        site = f"s{rng.integers(0, 40)}" if i != 900 else '"q,x"'  # quoting: generic block
        n = str(rng.integers(0, 30)) if i % 97 else ""
        if i in (400, 1800):
            n = "nan" if i == 400 else "seven"  # bad numbers: skipped, reported identically
        rows.append([str(10**18 + i), str(i % 3 == 0 and 1 or 0), hour, site, n])
    path = tmp_path / "train.csv"
    with open(path, "w") as f:
        f.write(",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    cfg = {
        "name": "az",
        "format": "csv",
        "label": "click",
        "on_bad_rows": "skip",
        "block_mb": 0.01,
        "features": [
            {"name": "hour_of_day", "type": "categorical", "source": "hour", "derive": "hour_of_day"},
            {"name": "weekday", "type": "categorical", "source": "hour", "derive": "weekday"},
            {"name": "site", "type": "categorical"},
            {"name": "n", "type": "numeric", "transform": "log_square_bucket"},
            {"name": "nd", "type": "numeric", "source": "n", "transform": "dense", "normalizer": "minmax"},
        ],
        "split": {"method": "random", "ratios": [0.8, 0.2], "seed": 1},
    }
    a, b, keyed_blocks = _encode_both(monkeypatch, cfg, path, tmp_path)
    assert keyed_blocks >= 6
    _assert_same_dataset(a, b)
    meta = json.loads((a / "feature_map.json").read_text())["meta"]
    assert (
        meta["bad_rows"]["count"] == 2 and "'seven' is not a finite number" in meta["bad_rows"]["examples"][1]
    )


@pytest.mark.parametrize("generic_block", [False, True])
def test_keyed_fields_skip_the_category_tables_until_a_generic_block(monkeypatch, tmp_path, generic_block):
    """Memory: while only keyed blocks come, plain categorical values get codes without a
    Polars ``Categories`` entry (~100 bytes each); a generic block loads them in code order."""
    rng = np.random.default_rng(5)
    cats = rng.integers(0, 300, (2000, 3))
    lines = []
    for i, (a, b, c) in enumerate(cats):
        num = "123456789" if generic_block and i == 1500 else str(a % 7)  # 9 bytes: generic
        lines.append(f"{int(rng.random() < 0.3)}\t{num}\tk{a:x}\tv{b:x}\t{'' if c % 5 == 0 else c}")
    path = tmp_path / "raw.txt"
    path.write_text("\n".join(lines) + "\n")
    cfg = {
        "name": "t",
        "format": "csv",
        "separator": "\t",
        "label": "y",
        "block_mb": 0.005,
        "features": [
            {"name": "n", "type": "numeric", "transform": "log_square_bucket"},
            {"name": "a", "type": "categorical"},
            {"name": "b", "type": "categorical"},
            {"name": "c", "type": "categorical"},
        ],
        "split": {"method": "random", "ratios": [0.7, 0.3], "seed": 2},
    }
    path.write_text("y\tn\ta\tb\tc\n" + path.read_text())
    seen = []
    release = ColumnPlan.release

    def spy(plan):
        names = ("a", "b", "c")
        entries = {n: len(plan.categories[n].to_series()) for n in names}
        seen.append((plan.lazy, entries, {n: plan.values(n).to_list() for n in names}))
        release(plan)

    monkeypatch.setattr(ColumnPlan, "release", spy)
    a, b, _ = _encode_both(monkeypatch, cfg, path, tmp_path)
    _assert_same_dataset(a, b)
    (lazy, entries, values), (generic_lazy, _, generic_values) = seen
    assert lazy == (not generic_block) and not generic_lazy
    assert all(v == 0 for v in entries.values()) if lazy else all(v > 0 for v in entries.values())
    # codes number each field's distinct non-empty values in first-seen order, on both paths
    columns = zip(*[ln.split("\t")[2:] for ln in lines], strict=True)
    first_seen = {n: list(dict.fromkeys(v for v in col if v)) for n, col in zip("abc", columns, strict=True)}
    assert values == generic_values == first_seen
