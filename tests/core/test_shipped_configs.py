"""Every YAML shipped in configs/ parses strictly, and every method config round-trips."""

from pathlib import Path

import pytest

from ctrzip.compression import METHODS
from ctrzip.config import from_dict, load_yaml, to_dict
from ctrzip.run_config import parse_run_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "compress").glob("*.yaml")), ids=lambda p: p.stem)
def test_compress_configs_parse(path: Path) -> None:
    cls = METHODS.get(path.stem).config_class
    cfg = from_dict(cls, load_yaml(path), source=str(path))
    assert from_dict(cls, to_dict(cfg)) == cfg


@pytest.mark.parametrize("path", sorted((CONFIGS / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_run_configs_parse(path: Path) -> None:
    run = parse_run_config(load_yaml(path), source=str(path))
    assert run.model.name


@pytest.mark.parametrize("key", METHODS.keys())
def test_every_method_config_round_trips(key: str) -> None:
    cls = METHODS.get(key).config_class
    required = {"budget": {"mb": 5.0}}  # a goal has no sensible default
    cfg = cls(**required.get(key, {}))
    assert from_dict(cls, to_dict(cfg)) == cfg
