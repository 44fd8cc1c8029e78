"""``torchrun --nproc-per-node 2 -m ctrzip compress``: the artifact one process would write, from
rank 0 only, renamed into place whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import ctrzip
from ctrzip.cli.compress import save_whole
from ctrzip.cli.main import app
from ctrzip.data.dataset import save_split
from ctrzip.export import ArtifactError

from .lowrank._lowrank_data import make_dataset, make_model

runner = CliRunner()
SETS = [
    "--max-auc-loss",
    "0.002",
    "--set",
    "batch_size=40",
    "--set",
    "calib_rows=1000",
    "--set",
    "device=cpu",
]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dcli")
    ds = make_dataset(root / "enc", n_train=400, n_valid=250)
    save_split(root / "enc", "test", ds["valid"])
    ctrzip.save(root / "model", make_model("deepfm"))
    return root / "model", root / "enc"


def _floats_close(a: Any, b: Any, path: str = "") -> None:
    """Equal JSON, floats within 1e-9 relative (a PCA of all-reduced moments: last bits)."""
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _floats_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _floats_close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_two_ranks_write_the_single_process_artifact(artifact: tuple[Path, Path], tmp_path: Path) -> None:
    model, enc = artifact
    one, two = tmp_path / "one", tmp_path / "two"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun sets OMP_NUM_THREADS=1: tiny tensors, shared cores
    try:
        res = runner.invoke(app, ["compress", "-m", str(model), "-d", str(enc), "-o", str(one), *SETS])
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    src = str(Path(ctrzip.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "ctrzip", "compress", "-m", str(model), "-d", str(enc), "-o", str(two), *SETS]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("saved compressed artifact") == 1  # rank 0 alone prints
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no half-written sibling
    assert (one / "model.safetensors").read_bytes() == (two / "model.safetensors").read_bytes()
    m1, m2 = (json.loads((p / "manifest.json").read_text()) for p in (one, two))
    _floats_close(m1, m2)
    plan = m2["compression_log"][0]["report"]["plan"]
    assert any(p["representation"] != "float" for p in plan)


def test_save_whole_renames_a_new_artifact_into_place(tmp_path: Path) -> None:
    net = make_model("deepfm")
    out = tmp_path / "a" / "b"
    save_whole(out, net, overwrite=False, encoder=None)
    assert ctrzip.load(out) is not None
    assert sorted(p.name for p in out.parent.iterdir()) == ["b"]  # the temporary folder is gone
    (tmp_path / "empty").mkdir()
    save_whole(tmp_path / "empty", net, overwrite=False, encoder=None)  # an empty folder is replaced
    assert (tmp_path / "empty" / "manifest.json").exists()


def test_save_whole_overwrite_keeps_other_files(tmp_path: Path) -> None:
    net = make_model("deepfm")
    out = tmp_path / "m"
    save_whole(out, net, overwrite=False, encoder=None)
    (out / "notes.txt").write_text("mine")
    save_whole(out, net, overwrite=True, encoder=None)  # file-by-file replacement, as save does
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(ArtifactError, match="already exists"):
        save_whole(out, net, overwrite=False, encoder=None)


def test_save_whole_error_names_the_requested_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(state: object, filename: str, metadata: object = None) -> None:
        raise OSError(28, "No space left on device", filename)

    monkeypatch.setattr("ctrzip.export.artifact.save_file", full)
    out = tmp_path / "out"
    with pytest.raises(ArtifactError) as err:
        save_whole(out, make_model("deepfm"), overwrite=False, encoder=None)
    assert str(err.value).startswith(f"{out}/model.safetensors.tmp: cannot write the artifact")
    assert ".tmp-" not in str(err.value) and list(tmp_path.iterdir()) == []


def test_save_whole_leaves_nothing_when_saving_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ctrzip.export as export

    def broken(path: Path, *a: Any, **k: Any) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(export, "save", broken)
    with pytest.raises(OSError, match="No space"):
        save_whole(tmp_path / "out", make_model("deepfm"), overwrite=False, encoder=None)
    assert list(tmp_path.iterdir()) == []  # neither the artifact nor its temporary folder
