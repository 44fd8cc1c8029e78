"""``ctrzip train`` / ``compress`` run management: resume only the same run, never overwrite an
artifact unasked, same seed -> same bytes, bad splits refused before training with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from ctrzip.cli import _common
from ctrzip.cli.main import app
from ctrzip.data.dataset import SplitArrays, save_counts, save_split
from ctrzip.data.schema import FeatureSchema, FieldSpec
from ctrzip.run_config import parse_run_config
from ctrzip.workflow import train_run

runner = CliRunner()
SCHEMA = FeatureSchema(fields=tuple(FieldSpec(f"f{i}", "categorical", vocab_size=12) for i in range(4)))


def _split(n: int, seed: int) -> SplitArrays:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 12, size=(n, 4))
    logit = np.where(ids[:, 0] == ids[:, 1], 2.0, -1.0) + 0.2 * (ids[:, 2] - 6)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return SplitArrays(ids.astype(np.int32), np.zeros((n, 0), np.float32), label)


def _dataset(root: Path, rows: dict[str, int], one_class: str | None = None) -> Path:
    root.mkdir(parents=True)
    SCHEMA.save(root / "feature_map.json")
    for i, (name, n) in enumerate(rows.items()):
        split = _split(n, seed=i)
        if name == one_class:
            split = SplitArrays(split.sparse, split.dense, np.ones(n, np.float32))
        save_split(root, name, split)
    train = _split(rows["train"], seed=0).sparse
    save_counts(
        root / "counts.npz",
        {f.name: np.bincount(train[:, j], minlength=12) for j, f in enumerate(SCHEMA.fields)},
    )
    return root


@pytest.fixture(autouse=True)
def _wide_console_one_thread(monkeypatch: pytest.MonkeyPatch):
    """Rich wraps at 80 columns when not on a terminal: keep each message on its one line.
    One thread: tiny models run several times faster than on two contended cores."""
    monkeypatch.setattr(_common.console, "width", 1000)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _dataset(tmp_path_factory.mktemp("runs") / "enc", {"train": 600, "valid": 200, "test": 200})


def _run_yaml(tmp_path: Path, data: Path, name: str = "run.yaml", **train: object) -> Path:
    cfg = tmp_path / name
    train_cfg = {"epochs": 1, "batch_size": 128, "lr": 0.005, "progress": False, "device": "cpu",
                 "out_dir": str(tmp_path / "run"), **train}  # fmt: skip
    body = {
        "dataset": str(data),
        "model": {"name": "deepfm", "params": {"embedding_dim": 4, "mlp": [16, 16]}},
    }
    cfg.write_text(json.dumps({**body, "train": train_cfg}))
    return cfg


def _train(cfg: Path, *args: str):
    return runner.invoke(app, ["train", "--config", str(cfg), *args])


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _one_line_error(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_rerun_resumes_only_the_same_run_and_never_overwrites_unasked(tmp_path: Path, data: Path) -> None:
    cfg = _run_yaml(tmp_path, data)
    res = _train(cfg)
    assert res.exit_code == 0, res.output
    art = tmp_path / "run" / "model"
    saved = _files(art)

    res = _train(cfg)  # same command again: the artifact is there, stop before any training
    assert res.exit_code == 2
    assert f"{art}: already exists (an artifact); pass --overwrite" in _one_line_error(res.output)
    assert "resuming" not in res.output and _files(art) == saved

    res = _train(cfg, "--overwrite")  # same settings: resumes the finished run, says so
    assert res.exit_code == 0, res.output
    assert f"resuming {tmp_path / 'run'} from step 5" in res.output

    for override, named in [
        ("train.lr=0.01", "train.lr 0.005 -> 0.01"),
        ("model.params.mlp=[32]", "model.mlp [16, 16] -> [32]"),
        ("train.weight_l2=0.00001", "train.weight_l2 0.0 -> 1e-05"),
    ]:
        for extra in (["--overwrite"], []):  # with or without --overwrite: the keys are named
            before = _files(art)
            res = _train(cfg, *extra, "--set", override)
            assert res.exit_code == 2, (override, res.output)
            line = _one_line_error(res.output)
            assert f"differs from the saved one in {named}" in line and "--fresh" in line
            assert "size mismatch" not in res.output
            assert _files(art) == before  # refused before any training or writing

    res = _train(cfg, "--overwrite", "--set", "train.epochs=2")  # a raised stop limit extends the run
    assert res.exit_code == 0, res.output
    assert f"resuming {tmp_path / 'run'} from step 5 (train.epochs 1 -> 2)" in res.output

    res = _train(cfg, "--fresh", "--overwrite", "--set", "train.lr=0.01")
    assert res.exit_code == 0, res.output
    assert "resuming" not in res.output
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])["lr"] == 0.01


def test_same_config_and_seed_give_bit_identical_weights(tmp_path: Path, data: Path) -> None:
    arts = []
    for i, seed in enumerate((5, 5, 6)):
        torch.manual_seed(100 + i)  # the global generator's state must not matter
        out = tmp_path / f"run{i}"
        res = _train(_run_yaml(tmp_path, data, f"r{i}.yaml", seed=seed, out_dir=str(out)))
        assert res.exit_code == 0, res.output
        arts.append(out / "model")
    assert _files(arts[0]) == _files(arts[1])  # every artifact file, checksums included
    a, c = load_file(arts[0] / "model.safetensors"), load_file(arts[2] / "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed does matter

    states = []
    for i in range(2):  # the Python API: the same workflow function, twice
        torch.manual_seed(200 + i)
        run = parse_run_config(json.loads(_run_yaml(tmp_path, data, f"p{i}.yaml", out_dir=None).read_text()))
        states.append(train_run(run).model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_compress_never_overwrites_an_artifact_unasked(tmp_path: Path, data: Path) -> None:
    res = _train(_run_yaml(tmp_path, data))
    assert res.exit_code == 0, res.output
    art = tmp_path / "run" / "model"
    saved = _files(art)
    args = ["compress", "--method", "lowrank", "--model", str(art), "--data", str(data),
            "--set", "rank=4", "--set", "finetune_epochs=0"]  # fmt: skip

    res = runner.invoke(app, [*args, "--out", str(art)])
    assert res.exit_code == 2
    assert f"--out {art} is the --model artifact; pass --overwrite" in _one_line_error(res.output)
    assert _files(art) == saved

    other = tmp_path / "other"
    res = runner.invoke(app, [*args, "--out", str(other)])
    assert res.exit_code == 0, res.output
    again = runner.invoke(app, [*args, "--out", str(other)])
    assert again.exit_code == 2 and "already exists (an artifact)" in _one_line_error(again.output)

    res = runner.invoke(app, [*args, "--out", str(art), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "LowRankLinear" in (art / "manifest.json").read_text()


@pytest.mark.parametrize(
    ("rows", "one_class", "named"),
    [
        ({"train": 0, "valid": 50, "test": 50}, None, "train split has no rows"),
        (
            {"train": 300, "valid": 50, "test": 50},
            "valid",
            "valid split has only clicks (label 1) in its 50 rows",
        ),
        (
            {"train": 300, "valid": 50, "test": 50},
            "test",
            "test split has only clicks (label 1) in its 50 rows",
        ),
    ],
)
def test_bad_splits_stop_before_training_with_one_line(
    tmp_path: Path, rows: dict[str, int], one_class: str | None, named: str
) -> None:
    enc = _dataset(tmp_path / "enc", rows, one_class)
    res = _train(_run_yaml(tmp_path, enc))
    assert res.exit_code == 2
    assert named in _one_line_error(res.output)
    assert not (tmp_path / "run" / "last.pt").exists()  # nothing trained


def test_evaluate_one_class_split_is_one_line(tmp_path: Path, data: Path) -> None:
    res = _train(_run_yaml(tmp_path, data))
    assert res.exit_code == 0, res.output
    enc = _dataset(tmp_path / "enc1", {"train": 50, "valid": 50, "test": 50}, one_class="test")
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "run" / "model"), "--data", str(enc)])
    assert res.exit_code == 2
    assert f"{enc}: split 'test' has only label 1" in _one_line_error(
        res.output.replace("\n", " ").replace(" error:", "\nerror:")
    )


def test_notes_when_nothing_is_saved_and_no_valid_split(tmp_path: Path) -> None:
    enc = _dataset(tmp_path / "enc", {"train": 300, "test": 50})
    res = _train(_run_yaml(tmp_path, enc, out_dir=None))
    assert res.exit_code == 0, res.output
    out = res.output.replace("\n", " ")
    assert "no artifact will be saved (set train.out_dir" in out
    assert "has no valid split: no early stopping or lr decay" in out


def test_out_equal_to_out_dir_is_refused_before_training(tmp_path: Path, data: Path) -> None:
    res = _train(_run_yaml(tmp_path, data), "--out", str(tmp_path / "run"))
    assert res.exit_code == 2
    assert "is train.out_dir, which holds the training checkpoints" in _one_line_error(res.output)
    assert not (tmp_path / "run").exists()  # nothing trained


def test_evaluate_bad_batch_size_and_device_are_one_line(tmp_path: Path, data: Path) -> None:
    res = _train(_run_yaml(tmp_path, data))
    assert res.exit_code == 0, res.output
    base = ["evaluate", "--model", str(tmp_path / "run" / "model"), "--data", str(data)]
    res = runner.invoke(app, [*base, "--batch-size", "0"])
    assert res.exit_code == 2 and "--batch-size" in res.output and "Traceback" not in res.output
    if not torch.cuda.is_available():
        res = runner.invoke(app, [*base, "--device", "cuda"])
        assert res.exit_code == 2
        assert "--device: device 'cuda': CUDA is not available" in _one_line_error(res.output)


def test_diverging_train_is_one_line_naming_epoch_step_and_checkpoint(tmp_path: Path, data: Path) -> None:
    cfg = _run_yaml(tmp_path, data, clip_grad_norm=None, eval_at_start=True)
    res = _train(cfg, "--set", "train.lr=1.0e+30")
    assert res.exit_code == 2
    line = _one_line_error(res.output)
    assert "training diverged" in line and "at epoch 1, step " in line
    assert f"last finite checkpoint: {tmp_path / 'run' / 'last.pt'} (step 0)" in line
    assert not (tmp_path / "run" / "model").exists()
