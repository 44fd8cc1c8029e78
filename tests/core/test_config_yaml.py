"""Config parsing: YAML 1.2 numbers in files and ``--set`` values, nested overrides that change
only the named keys, and user mistakes raised as ``ConfigError`` naming the setting."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from ctrzip.compression.lowrank.feature_mimicking import LowRankConfig
from ctrzip.compression.mec.method import MECConfig, PQConfig
from ctrzip.compression.mec.stage2 import StageTwoConfig
from ctrzip.config import ConfigError, apply_overrides, from_dict, load_yaml, parse_yaml
from ctrzip.data.loader import resolve_device
from ctrzip.errors import UserError
from ctrzip.models.base import build_model
from ctrzip.registry import UnknownNameError
from ctrzip.run_config import parse_run_config
from ctrzip.train.trainer import TrainConfig

FLOATS = ["1e-4", "1E5", "1e+5", "-2e-3", "+3E2", ".5", "-.5", "1.0e5", "2.5E-3", "1.", "0.001", "7_0.5"]


@pytest.mark.parametrize("text", FLOATS)
def test_yaml12_floats_are_numbers(text: str) -> None:
    value = parse_yaml(text)
    assert isinstance(value, float)
    assert value == float(text.replace("_", ""))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", 12),
        ("-3", -3),
        ("0", 0),
        ("1_000", 1000),
        ("0x10", 16),
        ("true", True),
        ("False", False),
        ("null", None),
        ("~", None),
        (".inf", math.inf),
        ("-.inf", -math.inf),
        # YAML 1.1-only forms stay strings (YAML 1.2 core schema)
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("1:30", "1:30"),
        ("2024-01-02", "2024-01-02"),
        # not numbers at all
        ("1e", "1e"),
        ("e5", "e5"),
        ("1.2.3", "1.2.3"),
        ("C1", "C1"),
    ],
)
def test_other_scalars(text: str, expected: object) -> None:
    value = parse_yaml(text)
    assert value == expected and type(value) is type(expected)


def test_nan() -> None:
    assert math.isnan(parse_yaml(".nan"))


def test_set_lr_scientific() -> None:
    # the example of `ctrzip train --help`
    data = apply_overrides({"train": {"epochs": 1}}, ["train.lr=1e-4", "train.min_lr=1E-7"])
    cfg = from_dict(TrainConfig, data["train"], path="train")
    assert cfg.lr == float("1e-4") and cfg.min_lr == float("1e-7") and cfg.epochs == 1


def test_yaml_file_scientific(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("lr: 1e-3\nembedding_l2: 1E-5\nepochs: 3\nmax_steps: null\n")
    cfg = from_dict(TrainConfig, load_yaml(f), source=str(f))
    assert (cfg.lr, cfg.embedding_l2, cfg.epochs, cfg.max_steps) == (1e-3, 1e-5, 3, None)


def test_quoted_number_is_still_refused(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("lr: '1e-3'\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: lr must be a number, got '1e-3'"):
        from_dict(TrainConfig, load_yaml(f), source=str(f))


def test_builtin_schema_parses_with_the_same_loader() -> None:
    from ctrzip.data.config import load_dataset_config

    cfg = load_dataset_config("criteo", ["split.seed=7"])
    assert cfg.split.seed == 7


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: invalid YAML"):
        load_yaml(f)
    with pytest.raises(ConfigError, match="not a file"):
        load_yaml(tmp_path)


def test_override_errors() -> None:
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["lr"])
    with pytest.raises(ConfigError, match="empty key"):
        apply_overrides({}, ["train..lr=1"])
    with pytest.raises(ConfigError, match="lr is not a section"):
        apply_overrides({"lr": 1}, ["lr.x=1"])


# --- nested dataclasses: a mapping changes only the keys it names -----------------------


def test_nested_override_keeps_the_field_default() -> None:
    # MECConfig.retrain defaults to lr 1e-3, patience 2 (StageTwoConfig's own defaults differ):
    # epochs=5 must not reset them to the class defaults
    default = MECConfig().retrain
    assert (default.lr, default.early_stop_patience) != (
        StageTwoConfig().lr,
        StageTwoConfig().early_stop_patience,
    )
    cfg = from_dict(MECConfig, {"retrain": {"epochs": 5}})
    assert cfg.retrain == dataclasses.replace(default, epochs=5)
    assert cfg.finetune == MECConfig().finetune


def test_nested_override_keeps_a_subclass_preset() -> None:
    cfg = from_dict(PQConfig, {"code_learning": {"steps": 100, "lr": 1e-2}})
    assert cfg.code_learning == dataclasses.replace(PQConfig().code_learning, steps=100, lr=1e-2)


def test_from_dict_onto_a_base() -> None:
    base = MECConfig.variant("rq", num_subspaces=2)
    cfg = from_dict(MECConfig, {"codebook_size": 16, "code_learning": {"steps": 5}}, base=base)
    assert cfg == dataclasses.replace(
        base, codebook_size=16, code_learning=dataclasses.replace(base.code_learning, steps=5)
    )
    assert base.codebook_size == 256  # the base itself is not changed


def test_nested_errors_name_the_dotted_key() -> None:
    with pytest.raises(ConfigError, match=r"mec: code_learning\.stpes is not a field .*did you mean steps"):
        from_dict(MECConfig, {"code_learning": {"stpes": 1}}, source="mec")
    with pytest.raises(ConfigError, match="code_learning: .*rho must be in"):
        from_dict(MECConfig, {"code_learning": {"rho": 2.0}})


# --- user mistakes are ConfigError (a UserError, still a ValueError for old callers) ----


@pytest.mark.parametrize(
    "make",
    [
        lambda: MECConfig(num_subspaces=0),
        lambda: LowRankConfig(mlp=False, embedding=False),
        lambda: TrainConfig(batch_size=0),
        lambda: StageTwoConfig(epochs=0),
    ],
)
def test_config_validation_raises_config_error(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError):
        make()


def test_unknown_registry_name_is_config_and_key_error(tiny_schema) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownNameError) as err:
        build_model("deepfmm", tiny_schema)
    assert isinstance(err.value, KeyError) and isinstance(err.value, UserError)
    assert str(err.value).startswith("unknown model 'deepfmm'; did you mean 'deepfm'?")  # no KeyError quotes
    with pytest.raises(KeyError, match="unknown MEC variant"):
        MECConfig.variant("weighted")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"mlp": [8, 0]}, "mlp widths must be >= 1"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"activation": "swishy"}, "unknown activation 'swishy'"),
        ({"embedding_dim": 0}, "embedding_dim must be >= 1"),
    ],
)
def test_model_building_errors(tiny_schema, params: dict, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=needle):
        build_model("deepfm", tiny_schema, params)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_resolve_device_refuses_cuda_without_cuda() -> None:
    with pytest.raises(ConfigError, match="'cuda': CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_resolve_device_refuses_a_non_device() -> None:
    with pytest.raises(ConfigError, match="'gpu' is not a device name"):
        resolve_device("gpu")
    assert resolve_device("cpu") == torch.device("cpu")


def _run(dataset: str, **model: object) -> dict:
    return {"dataset": dataset, "model": {"name": "deepfm", "params": {}, **model}, "train": {"epochs": 1}}


def test_run_config_checks_model_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run\.yaml: model\.name: unknown model 'dfm'"):
        parse_run_config(_run("d", name="dfm"), source=str(tmp_path / "run.yaml"))
    with pytest.raises(ConfigError, match=r"run\.yaml: model\.params\.mpl is not a field of DeepFMConfig"):
        parse_run_config(_run("d", params={"mpl": [4]}), source=str(tmp_path / "run.yaml"))
    with pytest.raises(ConfigError, match=r"train: epochs must be >= 1"):
        parse_run_config({**_run("d"), "train": {"epochs": 0}}, source="run.yaml")


def test_run_config_relative_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    run_file = conf / "run.yaml"
    run_file.write_text(json.dumps(_run("data")))
    monkeypatch.chdir(tmp_path)
    assert parse_run_config(_run("data"), source=str(run_file)).dataset == str(conf / "data")
    (tmp_path / "data").mkdir()  # now "data" exists in both places: ambiguous, refused
    with pytest.raises(ConfigError, match="dataset: 'data' exists both"):
        parse_run_config(_run("data"), source=str(run_file))
