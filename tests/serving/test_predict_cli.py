"""``ctrzip predict`` end to end (train -> compress -> predict with one command each) and its
errors: bad rows, an artifact without encoder, outputs that cannot be written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import ctrzip
from ctrzip.cli.main import app
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.encode import encode_dataset
from ctrzip.data.readers import BadRowError, DataFormatError
from ctrzip.export import MissingEncoderError, save
from ctrzip.serving.output import OutputError
from ctrzip.train.evaluation import predict as predict_arrays

from ._fixtures import COMPOSE_CONFIG, tiny_model, write_compose_raw

runner = CliRunner()


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("raw")
    files = {
        "train": write_compose_raw(root / "train.csv", 400, 0),
        "valid": write_compose_raw(root / "valid.csv", 120, 1, unseen=True),
        "test": write_compose_raw(root / "test.csv", 120, 2, unseen=True),
    }
    encode_dataset(COMPOSE_CONFIG, files, root / "enc", progress=False)
    return {**files, "enc": root / "enc"}


def _error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_train_compress_predict_one_command_each(raw, tmp_path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text(json.dumps({
        "dataset": str(raw["enc"]),
        "model": {"name": "deepfm", "params": {"embedding_dim": 4, "mlp": [16]}},
        "train": {"epochs": 1, "batch_size": 64, "progress": False, "device": "cpu",
                  "out_dir": str(tmp_path / "r")},
    }))  # fmt: skip
    res = runner.invoke(app, ["train", "--config", str(run)])
    assert res.exit_code == 0, res.output
    trained = tmp_path / "r" / "model"
    small = tmp_path / "int8"
    res = runner.invoke(app, ["compress", "--method", "int8", "--model", str(trained),
                              "--data", str(raw["enc"]), "--out", str(small)])  # fmt: skip
    assert res.exit_code == 0, res.output
    data = EncodedDataset.open(raw["enc"])
    for art in (trained, small):
        out = tmp_path / f"{art.name}.csv"
        args = ["predict", "--model", str(art), "--input", str(raw["test"]), "--output", str(out)]
        res = runner.invoke(app, [*args, "--id-column", "uid", "--batch-rows", "7", "--no-progress"])
        assert res.exit_code == 0, res.output
        assert f"wrote 120 probabilities to {out}" in " ".join(res.output.split())
        got = pl.read_csv(out)
        want = predict_arrays(ctrzip.load(art), data["test"], device="cpu")
        np.testing.assert_allclose(got["probability"].to_numpy(), want, rtol=0, atol=1e-6)
        assert got["uid"].to_list() == [f"u2-{i}" for i in range(120)]
        res = runner.invoke(app, args)  # the output exists now: refused, nothing replaced
        assert res.exit_code == 2 and f"{out}: already exists; pass --overwrite" in _error_line(res.output)


def _broken(src: Path, dst: Path) -> Path:
    lines = src.read_text().splitlines(True)
    cells = lines[4].split(",")
    cells[4] = "not-a-number"  # x of data row 3 (line 5)
    lines[4] = ",".join(cells)
    lines[6] = "1,b1\n"  # wrong column count: data row 5 (line 7)
    dst.write_text("".join(lines))
    return dst


def test_bad_rows_error_names_file_line_column_or_skip_counts_them(raw, tmp_path) -> None:
    art = save(tmp_path / "art", tiny_model(EncodedDataset.open(raw["enc"])), encoder=raw["enc"])
    bad = _broken(raw["test"], tmp_path / "bad.csv")
    out = tmp_path / "p.parquet"
    with pytest.raises(BadRowError, match=rf"{bad}:7: expected 6 columns, got 2"):
        ctrzip.predict(art, bad, out, device="cpu")
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))  # never half-written
    args = ["predict", "--model", str(art), "--input", str(bad), "--output", str(out), "--no-progress"]
    for extra in ([], ["--on-error", "raise"], ["--on-bad-rows", "error"]):  # the default, spelled out
        res = runner.invoke(app, [*args, *extra])
        assert res.exit_code == 2 and f"{bad}:7: expected 6 columns" in _error_line(res.output)
    for option in ("--on-bad-rows", "--on-error"):
        res = runner.invoke(app, [*args, option, "skip", "--overwrite"])
        assert res.exit_code == 0, res.output
        text = " ".join(res.output.split())
        assert (
            "skipped 2 bad rows" in text
            and f"{bad}:5: column x: 'not-a-number'" in text
            and f"{bad}:7:" in text
        )
    got = pl.read_parquet(out)
    assert got["row"].to_list() == [i for i in range(120) if i not in (3, 5)]
    full = ctrzip.predict(art, raw["test"], device="cpu")
    np.testing.assert_allclose(got["probability"].to_numpy(), np.delete(full, [3, 5]), rtol=0, atol=1e-6)
    # in memory, skip gives NaN at the bad rows' positions
    mem = ctrzip.predict(art, bad, on_bad_rows="skip", device="cpu")
    assert np.isnan(mem[[3, 5]]).all() and np.allclose(
        np.delete(mem, [3, 5]), np.delete(full, [3, 5]), atol=1e-6
    )
    report = ctrzip.predict(art, bad, tmp_path / "q.csv", on_bad_rows="skip", device="cpu")
    assert report.bad_rows["count"] == 2 and report.rows == 118


def test_every_row_bad_or_no_rows_is_an_error(raw, tmp_path) -> None:
    art = save(tmp_path / "art", tiny_model(EncodedDataset.open(raw["enc"])), encoder=raw["enc"])
    only_bad = tmp_path / "bad.csv"
    only_bad.write_text("label,big,tags,small,x,uid\n1,b1,t1,s1,nan?,u\n")
    with pytest.raises(
        DataFormatError, match=rf"{only_bad}: no rows to score \(all 1 rows are bad; first: {only_bad}:2:"
    ):
        ctrzip.predict(art, only_bad, tmp_path / "p.csv", on_bad_rows="skip", device="cpu")
    header = tmp_path / "header.csv"
    header.write_text("label,big,tags,small,x,uid\n")
    with pytest.raises(DataFormatError, match=rf"{header}: no rows to score$"):
        ctrzip.predict(art, header, tmp_path / "p.csv", device="cpu")
    assert not (tmp_path / "p.csv").exists()


def test_artifact_without_encoder_is_a_one_line_error(raw, tmp_path) -> None:
    art = save(tmp_path / "old", tiny_model(EncodedDataset.open(raw["enc"])))  # no encoder
    with pytest.raises(MissingEncoderError, match="has no encoder/"):
        ctrzip.predict(art, raw["test"], device="cpu")
    res = runner.invoke(app, ["predict", "--model", str(art), "--input", str(raw["test"]), "--output",
                              str(tmp_path / "p.csv")])  # fmt: skip
    line = _error_line(res.output)
    assert res.exit_code == 2 and str(art) in line and "encoder='DATA_DIR'" in line


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--output", "p.txt", "the output must end in .parquet or .csv"),
        ("--output", "nowhere/p.csv", "no such folder for the output"),
        ("--batch-rows", "0", "--batch-rows must be >= 1, got 0"),
        ("--on-bad-rows", "maybe", "on_bad_rows must be error or skip, got 'maybe'"),
        ("--device", "tpu", "--device: device 'tpu'"),
        ("--format", "xlsx", "unknown format 'xlsx'"),
        ("--id-column", "nope", "missing columns ['nope']"),
        ("--input", "missing.csv", "missing.csv: input file not found"),
    ],
)
def test_bad_options_are_one_line_errors(raw, tmp_path, option, value, message) -> None:
    art = save(tmp_path / "art", tiny_model(EncodedDataset.open(raw["enc"])), encoder=raw["enc"])
    opts = {"--model": str(art), "--input": str(raw["test"]), "--output": str(tmp_path / "p.csv")}
    opts[option] = str(tmp_path / value) if option in ("--output", "--input") else value
    res = runner.invoke(app, ["predict", *(x for kv in opts.items() for x in kv), "--no-progress"])
    assert res.exit_code == 2 and message in _error_line(res.output), res.output
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises((OutputError, DataFormatError, ctrzip.config.ConfigError)):
        ctrzip.predict(art, opts["--input"], opts["--output"], **_kw(option, value))


def _kw(option: str, value: str) -> dict[str, object]:
    key = {"--batch-rows": "batch_rows", "--on-bad-rows": "on_bad_rows", "--device": "device",
           "--format": "format", "--id-column": "id_column"}.get(option)  # fmt: skip
    if key is None:
        return {}
    return {key: int(value) if key == "batch_rows" else value}
