"""Every error a user can cause is one ``error:`` line naming the file/field/setting, exit code 2;
other exceptions keep their traceback, and ``ctrzip --debug`` shows it for user errors too."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ctrzip.cli.main import app
from ctrzip.config import ConfigError
from ctrzip.data.synthetic import generate

runner = CliRunner()


def one_error(res, *needles: str) -> str:  # type: ignore[no-untyped-def]
    """Assert exit code 2 and exactly one ``error:`` line that contains every needle; return it."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("err")
    raw = root / "raw.txt"
    generate("criteo-like", raw, rows=3000, seed=3, progress=False)
    out = root / "enc"
    res = runner.invoke(
        app, ["data", "encode", "--schema", "criteo", "--input", str(raw), "--out", str(out), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    return out


def run_file(tmp: Path, encoded: Path, model: dict | None = None, **train: object) -> Path:
    cfg = tmp / "run.yaml"
    t = {"epochs": 1, "batch_size": 512, "progress": False, "max_steps": 2, **train}
    m = model or {"name": "deepfm", "params": {"embedding_dim": 8, "mlp": [16, 16]}}
    cfg.write_text(json.dumps({"dataset": str(encoded), "model": m, "train": t}))
    return cfg


@pytest.fixture(scope="module")
def artifact(encoded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("art")
    res = runner.invoke(app, ["train", "-c", str(run_file(tmp, encoded)), "--out", str(tmp / "model")])
    assert res.exit_code == 0, res.output
    return tmp / "model"


@pytest.fixture(scope="module")
def lowrank_artifact(encoded: Path, artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lr") / "model"
    res = runner.invoke(
        app,
        [
            "compress", "--method", "lowrank", "-m", str(artifact), "-d", str(encoded), "-o", str(out),
            "--set", "rank=4", "--set", "finetune_epochs=0",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return out


def compress_args(artifact: Path, encoded: Path, out: Path, *sets: str) -> list[str]:
    args = ["compress", "--method", "mec", "-m", str(artifact), "-d", str(encoded), "-o", str(out)]
    for s in sets:
        args += ["--set", s]
    return args


# --- compress settings -------------------------------------------------------------------


def test_num_subspaces_not_dividing_width(artifact: Path, encoded: Path, tmp_path: Path) -> None:
    sets = ("num_subspaces=3", "min_vocab=3", "codebook_size=4")
    res = runner.invoke(app, compress_args(artifact, encoded, tmp_path / "o", *sets))
    one_error(res, "num_subspaces=3", "width 8")
    assert not (tmp_path / "o").exists()


def test_unknown_fields(artifact: Path, encoded: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, compress_args(artifact, encoded, tmp_path / "o", "fields=[C1, nope]"))
    one_error(res, "fields", "'nope'")


def test_unknown_method_is_one_line_listing_the_valid_ones(
    artifact: Path, encoded: Path, tmp_path: Path
) -> None:
    args = compress_args(artifact, encoded, tmp_path / "o")
    args[2] = "weighted_kmean"
    line = one_error(
        res := runner.invoke(app, args), "--method weighted_kmean", "did you mean 'weighted_kmeans'"
    )
    assert not line.startswith('error: "'), res.output  # no KeyError quotes around the message
    for name in ("mec", "pq", "lowrank", "svd", "tt", "weighted_kmeans", "rq", "aq"):
        assert name in line


def test_bad_method_value(artifact: Path, encoded: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, compress_args(artifact, encoded, tmp_path / "o", "codebook_size=1"))
    one_error(res, "codebook_size must be >= 2")


def test_setting_the_protocol_would_ignore_is_refused(artifact: Path, encoded: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        app, compress_args(artifact, encoded, tmp_path / "o", "protocol=none", "finetune.epochs=3")
    )
    one_error(res, "finetune", "protocol")
    res = runner.invoke(app, compress_args(artifact, encoded, tmp_path / "o", "fields=[C1]", "min_vocab=5"))
    one_error(res, "min_vocab", "fields")


# --- evaluate / train settings ----------------------------------------------------------


def test_evaluate_one_class_split(artifact: Path, encoded: Path, tmp_path: Path) -> None:
    data = tmp_path / "enc"
    shutil.copytree(encoded, data)
    n = len(np.load(data / "test_label.npy"))
    np.save(data / "test_label.npy", np.zeros(n, dtype=np.float32))
    res = runner.invoke(app, ["evaluate", "-m", str(artifact), "-d", str(data), "--split", "test"])
    one_error(res, str(data), "'test'", "only label 0")
    res = runner.invoke(app, ["evaluate", "-m", str(artifact), "-d", str(data), "--split", "valid"])
    assert res.exit_code == 0, res.output  # the other splits still evaluate


def test_evaluate_unknown_split(artifact: Path, encoded: Path) -> None:
    res = runner.invoke(app, ["evaluate", "-m", str(artifact), "-d", str(encoded), "--split", "tst"])
    one_error(res, "'tst'", "valid")


def test_unknown_model_name(tmp_path: Path, encoded: Path) -> None:
    cfg = run_file(tmp_path, encoded, model={"name": "deepfmm", "params": {}})
    one_error(runner.invoke(app, ["train", "-c", str(cfg)]), str(cfg), "model.name", "did you mean 'deepfm'")


def test_unknown_model_parameter(tmp_path: Path, encoded: Path) -> None:
    cfg = run_file(tmp_path, encoded, model={"name": "deepfm", "params": {"dropuot": 0.1}})
    one_error(
        runner.invoke(app, ["train", "-c", str(cfg)]),
        str(cfg),
        "model.params.dropuot",
        "did you mean dropout",
    )


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"mlp": [16, 0]}, "mlp widths must be >= 1"),
        ({"dropout": 1.5}, "dropout"),
        ({"activation": "relu6"}, "relu6"),
    ],
)
def test_invalid_model_parameter(tmp_path: Path, encoded: Path, params: dict, needle: str) -> None:
    cfg = run_file(tmp_path, encoded, model={"name": "deepfm", "params": {"embedding_dim": 4, **params}})
    one_error(runner.invoke(app, ["train", "-c", str(cfg), "--out", str(tmp_path / "a")]), "deepfm", needle)


def test_missing_dataset_folder(tmp_path: Path, artifact: Path) -> None:
    missing = tmp_path / "no_such_data"
    one_error(runner.invoke(app, ["train", "-c", str(run_file(tmp_path, missing))]), str(missing))
    one_error(runner.invoke(app, ["evaluate", "-m", str(artifact), "-d", str(missing)]), str(missing))
    res = runner.invoke(
        app, ["compress", "--method", "pq", "-m", str(artifact), "-d", str(missing), "-o", "x"]
    )
    one_error(res, str(missing))


def test_missing_config_file(tmp_path: Path) -> None:
    one_error(runner.invoke(app, ["train", "-c", str(tmp_path / "nope.yaml")]), "nope.yaml", "not found")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_on_a_cpu_build(tmp_path: Path, encoded: Path, artifact: Path) -> None:
    res = runner.invoke(app, ["evaluate", "-m", str(artifact), "-d", str(encoded), "--device", "cuda"])
    one_error(res, "--device", "CUDA is not available")
    cfg = run_file(tmp_path, encoded, device="cuda")
    one_error(runner.invoke(app, ["train", "-c", str(cfg)]), "train.device", "CUDA is not available")
    res = runner.invoke(app, compress_args(artifact, encoded, tmp_path / "o", "device=cuda", "min_vocab=3"))
    one_error(res, "device 'cuda'", "CUDA is not available")


def test_not_a_device(artifact: Path, encoded: Path) -> None:
    res = runner.invoke(app, ["evaluate", "-m", str(artifact), "-d", str(encoded), "--device", "gpu0"])
    one_error(res, "--device", "'gpu0'")


def test_batch_size_zero(artifact: Path, encoded: Path) -> None:
    res = runner.invoke(app, ["evaluate", "-m", str(artifact), "-d", str(encoded), "--batch-size", "0"])
    one_error(res, "--batch-size must be >= 1, got 0")


def test_train_batch_size_zero(tmp_path: Path, encoded: Path) -> None:
    one_error(
        runner.invoke(app, ["train", "-c", str(run_file(tmp_path, encoded, batch_size=0))]), "batch_size"
    )


@pytest.mark.parametrize(("option", "value"), [("--rows", "0"), ("--epochs", "0"), ("--device", "cuda:7")])
def test_demo_impossible_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str, value: str
) -> None:
    if option == "--device" and torch.cuda.device_count() > 7:
        pytest.skip("machine has 8 GPUs")
    monkeypatch.setenv("CTRZIP_CACHE", str(tmp_path))
    one_error(runner.invoke(app, ["demo", option, value, "--no-progress"]), option)
    assert not any(tmp_path.iterdir())  # refused before generating anything


def test_encode_split_method_contradicting_files(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text("")
    args = [
        "data",
        "encode",
        "--schema",
        "criteo",
        "--input",
        str(raw),
        "--valid",
        str(raw),
        "--out",
        str(tmp_path / "o"),
    ]
    one_error(runner.invoke(app, [*args, "--set", "split.method=random"]), "split.method=random", "--valid")


# --- writes -----------------------------------------------------------------------------


def _disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_saving_names_the_folder(
    tmp_path: Path, encoded: Path, artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ctrzip.export.artifact._atomic_write", _disk_full)
    out = tmp_path / "trained"
    res = runner.invoke(app, ["train", "-c", str(run_file(tmp_path, encoded)), "--out", str(out)])
    one_error(res, str(out), "No space left on device")
    out = tmp_path / "compressed"
    res = runner.invoke(
        app,
        [
            "compress", "--method", "lowrank", "-m", str(artifact), "-d", str(encoded), "-o", str(out),
            "--set", "rank=4", "--set", "finetune_epochs=0", "--set", "embedding=false",
        ],
    )  # fmt: skip
    one_error(res, str(out), "No space left on device")


def test_disk_full_in_the_weights_file(
    tmp_path: Path, encoded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(state: object, filename: str, metadata: object = None) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr("ctrzip.export.artifact.save_file", full)
    out = tmp_path / "trained"
    res = runner.invoke(app, ["train", "-c", str(run_file(tmp_path, encoded)), "--out", str(out)])
    one_error(res, str(out / "model.safetensors.tmp"), "No space left on device")


def test_other_os_errors_are_one_line(artifact: Path, encoded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/srv/models/model.safetensors")

    monkeypatch.setattr("ctrzip.export.load", denied)
    res = runner.invoke(app, ["evaluate", "-m", str(artifact), "-d", str(encoded)])
    one_error(res, "/srv/models/model.safetensors: Permission denied")


# --- artifacts --------------------------------------------------------------------------


def _rehash(folder: Path) -> None:
    sums = json.loads((folder / "checksums.json").read_text())
    for name in sums:
        sums[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "checksums.json").write_text(json.dumps(sums))


def _copy(src: Path, tmp: Path) -> Path:
    dst = tmp / "copy"
    shutil.copytree(src, dst)
    return dst


def _evaluate(art: Path, encoded: Path):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["evaluate", "-m", str(art), "-d", str(encoded)])


def test_manifest_not_json_is_caught_by_the_checksum_first(
    artifact: Path, encoded: Path, tmp_path: Path
) -> None:
    art = _copy(artifact, tmp_path)
    (art / "manifest.json").write_text('{"model": "deepfm", ')
    one_error(_evaluate(art, encoded), str(art / "manifest.json"), "checksum mismatch")


def test_manifest_not_json_with_matching_checksums(artifact: Path, encoded: Path, tmp_path: Path) -> None:
    art = _copy(artifact, tmp_path)
    (art / "manifest.json").write_text('{"model": "deepfm", ')
    _rehash(art)
    one_error(_evaluate(art, encoded), str(art / "manifest.json"), "not valid JSON")


def test_checksums_not_json(artifact: Path, encoded: Path, tmp_path: Path) -> None:
    art = _copy(artifact, tmp_path)
    (art / "checksums.json").write_text("sha256...")
    one_error(_evaluate(art, encoded), str(art / "checksums.json"), "not valid JSON")


def test_not_an_artifact(tmp_path: Path, encoded: Path) -> None:
    one_error(_evaluate(tmp_path / "nothing", encoded), "not a ctrzip artifact (no such folder)")
    one_error(_evaluate(tmp_path, encoded), "no manifest.json")


def _edit_manifest(art: Path, edit) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((art / "manifest.json").read_text())
    edit(manifest)
    (art / "manifest.json").write_text(json.dumps(manifest))


def test_edited_spec_without_new_checksums(lowrank_artifact: Path, encoded: Path, tmp_path: Path) -> None:
    art = _copy(lowrank_artifact, tmp_path)
    fqn = next(iter(json.loads((art / "manifest.json").read_text())["modules"]))
    _edit_manifest(
        art, lambda m: m["modules"][fqn]["spec"].update(rank=m["modules"][fqn]["spec"]["rank"] + 1)
    )
    one_error(_evaluate(art, encoded), "manifest.json", "checksum mismatch")


@pytest.mark.parametrize("edit", ["rank", "unknown_key", "type", "model_config"])
def test_edited_spec_with_new_checksums(
    lowrank_artifact: Path, encoded: Path, tmp_path: Path, edit: str
) -> None:
    art = _copy(lowrank_artifact, tmp_path)
    fqn = next(iter(json.loads((art / "manifest.json").read_text())["modules"]))

    def change(m: dict) -> None:
        spec = m["modules"][fqn]["spec"]
        if edit == "rank":
            spec["rank"] += 1
        elif edit == "unknown_key":
            spec["rnak"] = 3
        elif edit == "type":
            m["modules"][fqn]["type"] = "NoSuchModule"
        else:
            m["config"]["mlp"] = [32, 32]

    _edit_manifest(art, change)
    _rehash(art)
    expected = {
        "rank": ("model.safetensors does not match",),
        "unknown_key": ("manifest.json", f"modules.{fqn}", "rnak"),
        "type": ("manifest.json", f"modules.{fqn}", "NoSuchModule"),
        "model_config": ("model.safetensors does not match",),
    }[edit]
    one_error(_evaluate(art, encoded), *expected)


# --- --debug and bugs -------------------------------------------------------------------


def test_debug_shows_the_traceback_of_a_user_error(artifact: Path, encoded: Path) -> None:
    res = runner.invoke(
        app, ["--debug", "evaluate", "-m", str(artifact), "-d", str(encoded), "--batch-size", "0"]
    )
    assert res.exit_code == 1 and isinstance(res.exception, ConfigError)
    assert "--batch-size" in str(res.exception)


def test_a_bug_keeps_its_traceback(artifact: Path, encoded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("an internal bug")

    monkeypatch.setattr("ctrzip.export.load", bug)
    res = runner.invoke(app, ["evaluate", "-m", str(artifact), "-d", str(encoded)])
    assert res.exit_code == 1 and isinstance(res.exception, RuntimeError)
    assert "error:" not in res.output


def test_help_example_lr_override_trains(tmp_path: Path, encoded: Path) -> None:
    help_text = runner.invoke(app, ["train", "--help"]).output
    assert "train.lr=1e-4" in help_text
    res = runner.invoke(app, ["train", "-c", str(run_file(tmp_path, encoded)), "--set", "train.lr=1e-4"])
    assert res.exit_code == 0, res.output


def test_dataset_of_another_schema(artifact: Path, encoded: Path, tmp_path: Path) -> None:
    other = tmp_path / "enc2"
    raw = encoded.parent / "raw.txt"
    args = ["data", "encode", "--schema", "criteo", "--input", str(raw), "--out", str(other), "--no-progress"]
    assert runner.invoke(app, [*args, "--set", "min_count=3"]).exit_code == 0
    one_error(runner.invoke(app, ["evaluate", "-m", str(artifact), "-d", str(other)]), str(other), "differs")
    res = runner.invoke(app, ["compress", "--method", "pq", "-m", str(artifact), "-d", str(other), "-o", "x"])
    one_error(res, str(other), "schema.json", "field '")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["evaluate", "-d", "x"], "Missing option '--model'"),
        (["evaluate", "-m", "x", "-d", "y", "--batch-size", "abc"], "'--batch-size'"),
        (["evaluat"], "Did you mean 'evaluate'"),
        (["--bogus"], "--bogus"),
        (["data", "synth", "criteo-like", "--out", "x", "--rows", "0"], "'--rows'"),
    ],
)
def test_parser_errors_are_one_line(args: list[str], needle: str) -> None:
    one_error(runner.invoke(app, args), needle, "--help'")


def test_help_and_no_args() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "compress" in res.output and "--debug" in res.output
    res = runner.invoke(app, [])
    assert res.exit_code == 2 and "Usage" in res.output and "error:" not in res.output


def test_encode_with_split_files_says_the_schema_split_is_not_used(encoded: Path, tmp_path: Path) -> None:
    from ctrzip.data.config import load_dataset_config

    raw = encoded.parent / "raw.txt"
    method = load_dataset_config("criteo").split.method
    assert method != "files"
    args = ["data", "encode", "--schema", "criteo", "--input", str(raw), "--out", str(tmp_path / "o")]
    res = runner.invoke(app, [*args, "--valid", str(raw), "--test", str(raw), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"the schema's {method} split" in " ".join(res.output.split())
    assert "is not used" in " ".join(res.output.split())


def test_debug_from_the_environment(artifact: Path, encoded: Path) -> None:
    args = ["evaluate", "-m", str(artifact), "-d", str(encoded), "--batch-size", "0"]
    res = runner.invoke(app, args, env={"CTRZIP_DEBUG": "1"})
    assert res.exit_code == 1 and isinstance(res.exception, ConfigError)
