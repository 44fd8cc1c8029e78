"""``ctrzip export`` end to end on a tiny artifact, and every refusal: one ``error:`` line naming
the option or file, exit code 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from compression.test_compose import _model, _schema, _split
from typer.testing import CliRunner

from ctrzip.cli.main import app
from ctrzip.data.batch import Batch
from ctrzip.data.dataset import save_split
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.export import load, save
from ctrzip.export import onnx as onnx_export
from ctrzip.export.exporter import export_model
from ctrzip.export.graph import random_batch
from ctrzip.export.plain import ExportError, PlainRowwiseTable
from ctrzip.nn.embedding.rowwise import RowwiseQuantTable
from ctrzip.nn.swappable import replace_module

runner = CliRunner()


def one_error(res, *needles: str) -> str:  # type: ignore[no-untyped-def]
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(tmp_path_factory.mktemp("art") / "model", _model())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    s = _schema()
    s.save(root / "feature_map.json")
    save_split(root, "test", _split(s, 50, np.random.default_rng(1)))
    return root


def _predict(artifact: Path, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    return load(artifact).predict(Batch(sparse, dense, torch.zeros(len(sparse))))


def test_cli_onnx_end_to_end(artifact: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "model.onnx"
    res = runner.invoke(
        app, ["export", "--model", str(artifact), "--format", "onnx", "--out", str(out), "--data", str(data)]
    )
    assert res.exit_code == 0, res.output
    assert f"saved onnx export to {out}" in res.output and "max_abs_diff" in res.output
    record = json.loads((tmp_path / "sub" / "model.onnx.parity.json").read_text())
    assert [c["rows"] for c in record["parity"]] == [50, 1]
    assert record["parity"][0]["source"] == f"data:{data} split test"
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "model.onnx",
        "model.onnx.parity.json",
    ]  # no temp left
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    b = random_batch(_schema(), 300, seed=4)
    got = sess.run(None, {"sparse": b.sparse.numpy(), "dense": b.dense.numpy()})[0]
    assert float(np.abs(got - _predict(artifact, b.sparse, b.dense).numpy()).max()) < 1e-5
    # an id outside its field's vocabulary scores NaN (ONNX Gather would read row V-1 for -1)
    sparse = b.sparse[:3].clone()
    sparse[1, 0] = -1
    got = sess.run(None, {"sparse": sparse.numpy(), "dense": b.dense[:3].numpy()})[0]
    assert np.isnan(got[1]) and not np.isnan(got[[0, 2]]).any()


def test_cli_torch_export_end_to_end_and_overwrite(artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt2"
    args = ["export", "--model", str(artifact), "--format", "torch-export", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    with out.open("rb") as f:
        program = torch.export.load(f).module()
    b = random_batch(_schema(), 19, seed=2)
    torch.testing.assert_close(
        program(b.sparse, b.dense), _predict(artifact, b.sparse, b.dense), rtol=0, atol=1e-5
    )
    # an existing file is refused without --overwrite, and left as it was
    before = out.read_bytes()
    one_error(runner.invoke(app, args), f"--out {out}: already exists", "--overwrite")
    assert out.read_bytes() == before
    res = runner.invoke(app, [*args, "--overwrite", "--rows", "7"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "model.pt2.parity.json").read_text())["parity"][0]["rows"] == 7


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--format", "tflite"], ["--format 'tflite'", "onnx, torch-export"]),
        (["--format", "onnx", "--opset", "17"], ["--opset 17", "18 or newer"]),
        (["--format", "torch-export", "--opset", "18"], ["--opset 18: only the onnx format"]),
        (["--format", "onnx", "--rows", "0"], ["--rows 0"]),
        (
            ["--format", "onnx", "--split", "valid", "--data", "DATA"],
            ["split 'valid'", "splits with rows: test"],
        ),
    ],
)
def test_cli_refuses_bad_options(
    extra: list[str], needles: list[str], artifact: Path, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.x"
    extra = [str(data) if a == "DATA" else a for a in extra]
    one_error(runner.invoke(app, ["export", "--model", str(artifact), "--out", str(out), *extra]), *needles)
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_folder_as_out(artifact: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["export", "--model", str(artifact), "--format", "onnx", "--out", str(tmp_path)])
    one_error(res, f"--out {tmp_path}: is a folder")


def test_refuses_data_of_another_schema(artifact: Path, tmp_path: Path) -> None:
    other = FeatureSchema(fields=(FieldSpec("big", "categorical", vocab_size=299),))
    other.save(tmp_path / "feature_map.json")
    with pytest.raises(ExportError, match=r"--data .*differs from the model's schema at 'big'"):
        export_model(load(artifact), tmp_path / "m.pt2", "torch-export", data=tmp_path)


def test_missing_onnx_package_says_how_to_install(artifact: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    real = onnx_export.importlib.import_module

    def fake(name: str):  # type: ignore[no-untyped-def]
        if name == "onnxscript":
            raise ModuleNotFoundError("No module named 'onnxscript'")
        return real(name)

    monkeypatch.setattr(onnx_export.importlib, "import_module", fake)
    res = runner.invoke(
        app, ["export", "--model", str(artifact), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]
    )
    one_error(res, "'onnxscript'", "pip install onnx onnxruntime onnxscript")
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_names_the_difference_and_writes_nothing(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    model = _model()
    weight = model.embedding.tables["big"].materialize()
    replace_module(model, "embedding.tables.big", RowwiseQuantTable.from_dense(weight, 8))
    real = PlainRowwiseTable.forward
    monkeypatch.setattr(
        PlainRowwiseTable, "forward", lambda self, ids: real(self, ids) + 0.5
    )  # a broken form
    with pytest.raises(
        ExportError,
        match=r"fails its parity check: max abs difference of probabilities [0-9.e-]+ \(>= 1e-05\)",
    ):
        export_model(model, tmp_path / "m.pt2", "torch-export")
    assert list(tmp_path.iterdir()) == []
