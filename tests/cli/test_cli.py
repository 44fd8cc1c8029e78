"""CLI smoke tests: encode -> train -> evaluate -> compress on small data, and a toy demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctrzip.cli.main import app
from ctrzip.data.synthetic import generate

runner = CliRunner()


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    raw = root / "raw.txt"
    generate("criteo-like", raw, rows=6000, seed=1, progress=False)
    out = root / "enc"
    res = runner.invoke(
        app,
        [
            "data",
            "encode",
            "--schema",
            "criteo",
            "--input",
            str(raw),
            "--out",
            str(out),
            "--set",
            "min_count=2",
        ],
    )
    assert res.exit_code == 0, res.output
    return out


def _run_yaml(tmp_path: Path, encoded: Path, **train: object) -> Path:
    cfg = tmp_path / "run.yaml"
    train_cfg = {"epochs": 1, "batch_size": 512, "progress": False, "out_dir": str(tmp_path / "run"), **train}
    cfg.write_text(
        json.dumps(
            {
                "dataset": str(encoded),
                "model": {"name": "deepfm", "params": {"embedding_dim": 8, "mlp": [16, 16]}},
                "train": train_cfg,
            }
        )
    )
    return cfg


def test_train_evaluate_compress(tmp_path: Path, encoded: Path) -> None:
    cfg = _run_yaml(tmp_path, encoded)
    res = runner.invoke(app, ["train", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    art = tmp_path / "run" / "model"
    assert (art / "model.safetensors").exists()
    assert "test" in res.output and "total" in res.output
    res = runner.invoke(app, ["evaluate", "--model", str(art), "--data", str(encoded), "--split", "valid"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "lr"
    res = runner.invoke(
        app,
        [
            "compress", "--method", "lowrank", "--model", str(art), "--data", str(encoded), "--out", str(out),
            "--set", "rank=4", "--set", "finetune_epochs=0",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "LowRankLinear" in (out / "manifest.json").read_text()


def test_train_rejects_unknown_key(tmp_path: Path, encoded: Path) -> None:
    cfg = _run_yaml(tmp_path, encoded, lr_rate=0.1)
    res = runner.invoke(app, ["train", "--config", str(cfg)])
    assert res.exit_code == 2
    assert "lr_rate is not a field of TrainConfig" in res.output.replace("\n", "")


def test_compress_unknown_method(tmp_path: Path, encoded: Path) -> None:
    res = runner.invoke(
        app,
        ["compress", "--method", "lowrnk", "--model", "x", "--data", str(encoded), "--out", str(tmp_path)],
    )
    assert res.exit_code == 2 and "did you mean 'lowrank'" in res.output.replace("\n", "")


def test_demo_toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTRZIP_CACHE", str(tmp_path))
    res = runner.invoke(app, ["demo", "--rows", "4000", "--epochs", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    out = res.output.replace("\n", " ")
    for row in ("DeepFM (dense)", "control", "mec(M=4,K=", "lowrank(mlp", "budget("):
        assert row in out
    assert "Criteo-" in out and "Criteo-projected: dense bytes" in out  # labelled column and its note
    # the run's own report, where the demo says it is, with one record per row shown
    report = tmp_path / "demo-report-4000-s0" / "report.html"
    assert f"report of this run: {report}" in res.output.replace("\n", "")
    records = [json.loads(x) for x in (report.parent / "results.jsonl").read_text().splitlines()]
    labels = [r["method"] for r in records]
    starts = ("DeepFM (dense)", "DeepFM dense + 1", "DeepFM dense + 2", "DeepFM + mec", "DeepFM + lowrank")
    assert [x[: len(p)] for x, p in zip(labels, starts, strict=False)] == list(starts)
    assert labels[5].startswith("DeepFM + budget(") and len(labels) == 6
    # MEC and lowrank are paired with the dense model fine-tuned as long (their controls)
    assert [r.get("control") for r in records] == [None, None, None, labels[1], labels[2], None]
    dense = records[0]
    for r in records:
        assert r["ratio"] == pytest.approx(dense["bytes"] / r["bytes"])
        assert r["projected_vocab"] == "criteo"
        if "projected_ratio" in r:
            assert r["projected_ratio"] == pytest.approx(dense["projected_bytes"] / r["projected_bytes"])
    page = report.read_text()
    assert page.count('<img src="data:image/png;base64,') == 4 and '<table id="cells">' in page
    # the MEC row's codes by popularity band: the report's fourth plot and its table
    assert [bool(r.get("pq_bands")) for r in records] == [False, False, False, True, False, False]
    assert '<table id="pq_bands">' in page and "PQ reconstruction error and code usage by band" in page
    res = runner.invoke(app, ["demo", "--rows", "4000", "--epochs", "1", "--no-progress", "--no-compress"])
    assert res.exit_code == 0, res.output
    assert "using cached demo data" in res.output


@pytest.mark.parametrize("model", __import__("ctrzip.models", fromlist=["MODELS"]).MODELS.keys())
def test_every_model_trains_through_ctrzip_train(tmp_path: Path, encoded: Path, model: str) -> None:
    cfg = tmp_path / "run.yaml"
    params = {"embedding_dim": 1} if model == "lr" else {"embedding_dim": 4}
    cfg.write_text(
        json.dumps(
            {
                "dataset": str(encoded),
                "model": {"name": model, "params": params},
                "train": {"epochs": 1, "batch_size": 1024, "progress": False, "max_steps": 3},
            }
        )
    )
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "art")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "art" / "model.safetensors").exists()
    assert "valid" in res.output and "test" in res.output
