"""Bad rows: wrong column count, non-numbers, bad labels, blank lines; error vs skip."""

from __future__ import annotations

import numpy as np
import pytest

from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import encode_dataset
from ctrzip.data.readers import BadRowError

from ._encode_helpers import criteo_config

GOOD = "0\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\t11\t12\t13\t" + "\t".join(f"c{i}" for i in range(26))


def _tsv(tmp_path, lines: list[str]):
    path = tmp_path / "raw.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cfg(policy: str, block_mb: float = 32.0) -> dict:
    return criteo_config(
        "criteo_tsv",
        on_bad_rows=policy,
        block_mb=block_mb,
        split={"method": "sequential", "ratios": [1.0, 0.0]},
    )


BAD_CASES = [
    (GOOD.rsplit("\t", 1)[0], r"raw\.txt:3: expected 40 columns, got 39 \(first missing column: C26\)"),
    (GOOD + "\textra", r"raw\.txt:3: expected 40 columns \(label\.\.C26\), got 41"),
    (GOOD.replace("\t5\t", "\tfive\t", 1), r"raw\.txt:3: column I5: 'five' is not a finite number"),
    ("2" + GOOD[1:], r"raw\.txt:3: column label: '2' is not a 0/1 label"),
    ("\t" + GOOD[2:], r"raw\.txt:3: column label: None is not a 0/1 label"),
    ("", r"raw\.txt:3: empty line"),
]


@pytest.mark.parametrize(("line", "message"), BAD_CASES)
def test_error_mode_names_file_line_and_column(tmp_path, line, message) -> None:
    path = _tsv(tmp_path, [GOOD, GOOD, line, GOOD])
    with pytest.raises(BadRowError, match=message):
        encode_dataset(_cfg("error"), path, tmp_path / "out", progress=False)


@pytest.mark.parametrize("block_mb", [32.0, 0.001])
def test_skip_mode_counts_reports_and_keeps_good_rows(tmp_path, block_mb) -> None:
    lines, bad_lines = [], []
    for i in range(60):
        if i % 7 == 3:
            lines.append(BAD_CASES[i % len(BAD_CASES)][0])
            bad_lines.append(i + 1)
        else:
            lines.append(GOOD.replace("c0", f"row{i}", 1))
    rep = encode_dataset(_cfg("skip", block_mb), _tsv(tmp_path, lines), tmp_path / "out", progress=False)
    assert rep.bad_rows["count"] == len(bad_lines)
    assert rep.rows["train"] == 60 - len(bad_lines)
    assert [int(e.split(":")[1]) for e in rep.bad_rows["examples"]] == bad_lines[
        : len(rep.bad_rows["examples"])
    ]
    ds = EncodedDataset.open(tmp_path / "out")
    assert ds.schema.meta["bad_rows"]["count"] == len(bad_lines)
    kept = sorted(
        int(v[3:]) for v in __import__("json").loads((tmp_path / "out/vocab/C1.json").read_text())["values"]
    )
    assert kept == [i for i in range(60) if i + 1 not in bad_lines]
    assert len(ds["train"]) == rep.rows["train"] and np.all(ds["train"].label == 0)


def test_quoted_separators_are_not_bad_rows(tmp_path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('label,a,b\n1,"x,y",z\n0,plain,"q"\n1,"x,y",w\n')
    cfg = {
        "name": "q",
        "format": "csv",
        "features": [{"name": "a", "type": "categorical"}, {"name": "b", "type": "categorical"}],
        "split": {"method": "sequential", "ratios": [1.0, 0.0]},
    }
    rep = encode_dataset(cfg, path, tmp_path / "out", progress=False)
    assert rep.rows["train"] == 3 and rep.bad_rows["count"] == 0
    assert __import__("json").loads((tmp_path / "out/vocab/a.json").read_text())["values"] == ["x,y", "plain"]
