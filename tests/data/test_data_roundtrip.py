"""Property: encoding any small table round-trips ids through the saved vocab, never crashes."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import Encoder, encode_dataset

from ._encode_helpers import write_csv

# printable values without the CSV quote, no surrounding spaces; "" means missing
value = st.text(alphabet=st.characters(codec="utf-8", exclude_characters='"\r\n\x00'), max_size=6).map(
    str.strip
)
row = st.tuples(st.integers(0, 1), value, value, st.integers(-5, 50) | st.none())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    train=st.lists(row, min_size=1, max_size=40),
    valid=st.lists(row, min_size=1, max_size=10),
    mc=st.integers(1, 3),
)
def test_encode_round_trips_through_vocab(train, valid, mc) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        header = ["label", "a", "b", "n"]
        paths = {}
        for name, rows in (("train", train), ("valid", valid)):
            paths[name] = write_csv(
                root / f"{name}.csv", header, [[y, a, b, "" if n is None else n] for y, a, b, n in rows]
            )
        cfg = {
            "name": "h",
            "format": "csv",
            "min_count": mc,
            "features": [
                {"name": "a", "type": "categorical"},
                {"name": "b", "type": "categorical", "min_count": 1},
                {"name": "n", "type": "numeric", "transform": "log_square_bucket"},
            ],
            "split": {"method": "files"},
        }
        encode_dataset(cfg, paths, root / "out", progress=False)
        ds = EncodedDataset.open(root / "out")
        for col, field in ((1, "a"), (2, "b"), (3, "n")):
            values = json.loads((root / "out" / "vocab" / f"{field}.json").read_text())["values"]
            spec = ds.schema[field]
            threshold = mc if field != "b" else 1
            raw_train = [_raw(r[col], field) for r in train]
            counts = Counter(v for v in raw_train if v is not None)
            assert sorted(values, key=lambda v: (-counts[v], v)) == values
            for split, rows in (("train", train), ("valid", valid)):
                ids = ds[split].sparse[:, ds.schema.sparse_slices()[field]].ravel()
                for r, i in zip(rows, ids, strict=True):
                    v = _raw(r[col], field)
                    if v is None:
                        assert i == 0
                    elif counts[v] >= threshold:
                        assert values[i - 1] == v
                    else:
                        assert i == spec.oov_id
            np.testing.assert_array_equal(ds[split].label, [r[0] for r in rows])
        # a new file through the saved encoder gives the same ids
        Encoder.load(root / "out").transform(paths["valid"], root / "again", split="valid")
        np.testing.assert_array_equal(EncodedDataset.open(root / "again")["valid"].sparse, ds["valid"].sparse)


def _raw(v, field: str):
    """What the encoder sees: '' is missing; numeric values bucket (all small ints here)."""
    if field == "n":
        if v is None:
            return None
        return int(np.floor(np.log(v) ** 2)) if v > 2 else int(v)
    return v if v != "" else None
