"""``ctrzip data encode`` end to end on the raw Criteo sample, and its error exit."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ctrzip.cli.main import app
from ctrzip.data.dataset import EncodedDataset


def test_cli_encode_criteo_raw(shared_data, tmp_path) -> None:
    raw = shared_data / "criteo_sample" / "kaggle_format.txt"
    args = ["data", "encode", "--schema", "criteo", "--input", str(raw), "--out", str(tmp_path)]
    result = CliRunner().invoke(
        app, [*args, "--set", "min_count=2", "--set", "split.seed=11", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    ds = EncodedDataset.open(tmp_path)
    assert sum(len(ds[s]) for s in ds.splits) == 200
    meta = json.loads((tmp_path / "feature_map.json").read_text())["meta"]
    assert meta["split"]["seed"] == 11 and meta["min_count"]["C1"] == 2 and meta["dataset"] == "criteo"
    assert meta["sources"] == [str(raw)]


def test_cli_files_split_and_errors(shared_data, tmp_path) -> None:
    src = shared_data / "criteo_sample"
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(
        "name: c\nformat: csv\nfeatures:\n"
        + "".join(f"  - {{name: C{i}, type: categorical}}\n" for i in range(1, 27))
    )
    out = tmp_path / "out"
    args = ["data", "encode", "--schema", str(yaml_path), "--input", str(src / "train.csv")]
    result = CliRunner().invoke(
        app, [*args, "--valid", str(src / "valid.csv"), "--test", str(src / "test.csv"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert {s: len(EncodedDataset.open(out)[s]) for s in ("train", "valid", "test")} == {
        "train": 160,
        "valid": 20,
        "test": 20,
    }
    bad = CliRunner().invoke(app, [*args, "--out", str(out), "--set", "split.ratio=[1]"])
    assert bad.exit_code == 2 and "split.ratio is not a field" in bad.output


@pytest.mark.parametrize("hour", ["14102", "1410x100", "14133100", "14102125"])
def test_avazu_bad_timestamp_is_a_bad_row(tmp_path, hour) -> None:
    from ctrzip.data.config import load_dataset_config
    from ctrzip.data.encode import encode_dataset
    from ctrzip.data.readers import BadRowError

    from ._encode_helpers import write_csv

    cfg = load_dataset_config("avazu")
    header = ["id", "click", "hour"] + [f.name for f in cfg.features[2:]]
    rows = [["1", 0, "14102100"] + ["x"] * 21, ["2", 1, hour] + ["y"] * 21]
    path = write_csv(tmp_path / "a.csv", header, rows)
    with pytest.raises(BadRowError, match=rf"a\.csv:3: column hour: '{hour}' is not a YYMMDDHH timestamp"):
        encode_dataset(cfg, path, tmp_path / "o", progress=False)


def test_cli_valid_test_files_say_the_schema_split_is_not_used(shared_data, tmp_path) -> None:
    src = shared_data / "criteo_sample"
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(
        "name: c\nformat: csv\nsplit: {method: random, ratios: [0.9, 0.1], seed: 3}\nfeatures:\n"
        + "".join(f"  - {{name: C{i}, type: categorical}}\n" for i in range(1, 4))
    )
    args = ["data", "encode", "--schema", str(yaml_path), "--input", str(src / "train.csv")]
    result = CliRunner().invoke(app, [*args, "--valid", str(src / "valid.csv"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "random split [0.9, 0.1] is not used" in " ".join(result.output.split())


def test_cli_encode_writing_no_rows_exits_2(tmp_path) -> None:
    raw = tmp_path / "comma.txt"
    raw.write_text("\n".join(["0," + ",".join(["1"] * 13 + ["c"] * 26)] * 3) + "\n")
    args = ["data", "encode", "--schema", "criteo", "--input", str(raw), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, [*args, "--set", "on_bad_rows=skip", "--no-progress"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "comma.txt: all 3 rows are bad" in text and "split on ','" in text


def test_cli_encode_does_not_replace_an_encoded_dataset_unless_asked(shared_data, tmp_path) -> None:
    raw = shared_data / "criteo_sample" / "kaggle_format.txt"
    out = tmp_path / "enc"
    args = ["data", "encode", "--schema", "criteo", "--input", str(raw), "--out", str(out), "--no-progress"]
    assert CliRunner().invoke(app, args).exit_code == 0
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    again = CliRunner().invoke(app, [*args, "--set", "min_count=2"])
    assert again.exit_code == 2, again.output
    assert f"{out}: already holds an encoded dataset; pass --overwrite" in " ".join(again.output.split())
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()} == before
    replaced = CliRunner().invoke(app, [*args, "--set", "min_count=2", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()} != before  # min_count=2 took effect
