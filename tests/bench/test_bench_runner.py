"""``ctrzip bench``: resume after an interrupted run, torn lines, record contents, suite checks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from _bench_data import TINY_SUITE, make_bench_data, write_suite
from typer.testing import CliRunner

from ctrzip.bench import runner as bench_runner
from ctrzip.bench.records import append_record, read_records, repair
from ctrzip.bench.runner import cell_key, run_bench
from ctrzip.bench.suite import SUITES, load_suite, load_suites
from ctrzip.cli.main import app
from ctrzip.compression.sizes import stored_bytes
from ctrzip.config import ConfigError
from ctrzip.export import load


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bench_data(tmp_path_factory.mktemp("bench") / "data")


def _keys(path: Path) -> list[tuple]:
    return [cell_key(r) for r in read_records(path)]


def test_resume_after_interrupt_runs_each_cell_once(
    bench_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = load_suite(write_suite(tmp_path / "tiny.yaml"))
    out = tmp_path / "out"
    calls: list[str] = []
    real = bench_runner.run_cell

    def interrupted(dense, cell, *args, **kwargs):  # the 2nd method cell is "killed"
        calls.append(cell.label)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(dense, cell, *args, **kwargs)

    monkeypatch.setattr(bench_runner, "run_cell", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_bench([suite], bench_data, ["deepfm"], [0], out, device="cpu", say=lambda _: None)
    first = _keys(out / "results.jsonl")
    assert [k[3] for k in first] == ["dense", "int8 rows"]  # dense + one cell, whole lines
    dense_dir = next((out / "dense").iterdir())
    mtime = (dense_dir / "model.safetensors").stat().st_mtime_ns

    calls.clear()
    lines: list[str] = []
    monkeypatch.setattr(
        bench_runner, "run_cell", lambda *a, **k: (calls.append(a[1].label), real(*a, **k))[1]
    )
    run_bench([suite], bench_data, ["deepfm"], [0], out, device="cpu", say=lines.append)
    assert calls == ["int4 rows + int8 linear"]  # only the missing cell ran
    keys = _keys(out / "results.jsonl")
    assert len(keys) == len(set(keys)) == 1 + len(suite.cells)  # none twice, all present
    assert {k[3] for k in keys} == {"dense", *(c.label for c in suite.cells)}
    assert (dense_dir / "model.safetensors").stat().st_mtime_ns == mtime  # cached, not retrained
    assert lines[0].startswith("3 cells, 2 already in")
    assert any(
        line.startswith("[3/3] deepfm s0 tiny/int4 rows + int8 linear") and "ETA" in line for line in lines
    )

    calls.clear()
    run_bench([suite], bench_data, ["deepfm"], [0], out, device="cpu", say=lambda _: None)
    assert calls == [] and _keys(out / "results.jsonl") == keys  # a finished run does nothing


def test_record_contents_against_independent_counts(bench_data: Path, tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path / "tiny.yaml"))
    out = tmp_path / "out"
    run_bench([suite], bench_data, ["deepfm"], [0], out, device="cpu", say=lambda _: None)
    recs = {r["method"]: r for r in read_records(out / "results.jsonl")}
    dense = load(next((out / "dense").iterdir()))
    assert recs["dense"]["bytes"] == stored_bytes(dense)
    assert recs["dense"]["bytes"] == sum(recs["dense"]["bytes_by_component"].values())
    r = recs["int4 rows + int8 linear"]
    assert r["ratio"] == pytest.approx(stored_bytes(dense) / r["bytes"])
    assert r["delta_test_auc"] == pytest.approx(r["test_auc"] - recs["dense"]["test_auc"])
    assert r["delta_valid_logloss"] == pytest.approx(r["valid_logloss"] - recs["dense"]["valid_logloss"])
    assert [s["method"] for s in r["settings"]] == ["int4", "linear_int8"]
    assert r["settings"][0]["config"]["device"] == "cpu"
    assert r["samples_per_s"] > 0 and r["timing_batch"] == 256  # test split smaller than 10k
    assert r["speed_vs_dense"] > 0 and recs["dense"]["speed_vs_dense"] == 1.0
    assert r["lookup_s_per_batch"] > 0 and r["dense_lookup_s_per_batch"] > 0
    assert r["machine"]["cores"] and r["torch"] == torch.__version__ and r["git"]
    assert "projected_bytes" not in r  # the tiny fields are neither Criteo's nor Avazu's


def test_torn_last_line_is_cut_and_that_cell_redone(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    append_record(path, {"a": 1})
    with path.open("ab") as f:
        f.write(b'{"a": 2, "b"')  # a write killed midway
    assert read_records(path) == [{"a": 1}]
    assert repair(path) and path.read_text() == json.dumps({"a": 1}) + "\n"
    assert not repair(path)


def test_bad_complete_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(Exception, match=r"results.jsonl:2: not a JSON line"):
        read_records(path)


@pytest.mark.parametrize("name", SUITES)
def test_shipped_suites_load(name: str) -> None:
    suite = load_suite(name)
    assert suite.name == name and suite.cells
    assert len({c.label for c in suite.cells}) == len(suite.cells)


def test_all_is_every_suite() -> None:
    assert [s.name for s in load_suites("all")] == list(SUITES)


BAD = [
    ("description: x\ncells: []\ntypo: 1\n", "typo is not a field of Suite"),
    ("description: x\ncells: [{label: a, steps: [{method: int8}]}]\ndense: {epoch: 2}\n", "dense.epoch"),
    ("description: x\ncells: [{label: a, stepz: []}]\n", "cells[0].stepz is not a field"),
    (
        "description: x\ncells: [{label: a, steps: [{method: int9}]}]\n",
        "cells[0].steps[0].method: unknown method 'int9'",
    ),
    (
        "description: x\ncells: [{label: a, steps: [{method: int8, settings: {bitz: 8}}]}]\n",
        "cells[0].steps[0]: bitz is not a field of Int8Config",
    ),
    (
        "description: x\ncells: [{label: a, steps: [{method: int8, whole_model_ratio: 4}]}]\n",
        "cells[0].steps[0].whole_model_ratio: method 'int8' has no 'mb' setting",
    ),
    (
        "description: x\ncells: [{label: a, steps: [{method: finetune, settings: {epochs: 0}}]}]\n",
        "cells[0].steps[0]",
    ),
    (
        "description: x\ncells: [{label: a, steps: [{method: int8}]}, {label: a, steps: [{method: int4}]}]\n",
        "cells[1].label 'a' is used twice",
    ),
    ("description: x\ncells: []\n", "cells is empty"),
    (
        "description: x\ncells: [{label: a, control: b, steps: [{method: int8}]}]\n",
        "cells[0].control 'b' is not another cell of this suite",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_suite_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_cli_errors_are_one_line(bench_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    suite = write_suite(tmp_path / "tiny.yaml", TINY_SUITE)
    common = ["--data", str(bench_data), "--out", str(tmp_path / "o")]
    for args, expected in (
        (["--suite", "nope", *common], "--suite nope: unknown suite"),
        (["--suite", str(suite), "--models", "deepfmm", *common], "--models: unknown model(s) ['deepfmm']"),
        (["--suite", str(suite), "--seeds", "0", *common], "--seeds must be >= 1"),
    ):
        res = runner.invoke(app, ["bench", *args])
        assert res.exit_code == 2 and "error:" in res.output, res.output
        assert expected in res.output.replace("\n", " "), res.output
    assert Counter(p.name for p in tmp_path.iterdir())["o"] == 0  # nothing written before the checks


def test_same_cell_in_two_suites_is_measured_once(
    bench_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = load_suite(write_suite(tmp_path / "a.yaml"))
    b = load_suite(write_suite(tmp_path / "b.yaml"))
    calls: list[str] = []
    real = bench_runner.run_cell
    monkeypatch.setattr(
        bench_runner, "run_cell", lambda *x, **k: (calls.append(x[1].label), real(*x, **k))[1]
    )
    out = tmp_path / "out"
    run_bench([a, b], bench_data, ["deepfm"], [0], out, device="cpu", say=lambda _: None)
    assert sorted(calls) == sorted(c.label for c in a.cells)  # b's equal cells were not rerun
    recs = read_records(out / "results.jsonl")
    assert len({cell_key(r) for r in recs}) == len(recs) == 1 + 2 * len(a.cells)
    by = {(r["suite"], r["method"]): r for r in recs}
    for c in a.cells:
        copy = by[("b", c.label)]
        assert copy["copied_from_suite"] == "a" and copy["test_auc"] == by[("a", c.label)]["test_auc"]


@pytest.mark.parametrize("vocab", ["criteo", "avazu", None])
def test_projection_vocabulary_follows_the_data_fields(vocab: str | None) -> None:
    from types import SimpleNamespace

    from ctrzip.bench.runner import projection_vocab
    from ctrzip.compression.mec.projection import FULL_SCALE_VOCAB

    names = list(FULL_SCALE_VOCAB[vocab]) if vocab else ["user", "item"]
    data = SimpleNamespace(schema=SimpleNamespace(sparse_fields=[SimpleNamespace(name=n) for n in names]))
    got = projection_vocab(data)  # type: ignore[arg-type]
    assert (got[0] if got else None) == vocab
    if vocab:
        assert got[1] == FULL_SCALE_VOCAB[vocab]
