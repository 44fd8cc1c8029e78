from dataclasses import dataclass, field
from typing import Literal

import pytest

from ctrzip.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict


@dataclass
class Inner:
    rate: float = 0.1
    names: tuple[str, ...] = ()


@dataclass
class Outer:
    lr: float = 1e-3
    epochs: int = 2
    mode: Literal["a", "b"] = "a"
    clip: float | None = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")


def test_round_trip_and_conversion():
    cfg = from_dict(Outer, {"lr": 1, "inner": {"names": ["x", "y"]}, "clip": 5})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.inner.names == ("x", "y")
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_unknown_key_names_file_and_suggests():
    with pytest.raises(ConfigError, match=r"run.yaml: inner.rat is not a field of Inner; did you mean rate"):
        from_dict(Outer, {"inner": {"rat": 1}}, source="run.yaml")


def test_unknown_key_without_a_close_match_lists_the_fields():
    with pytest.raises(ConfigError, match=r"inner.zzz is not a field of Inner; its fields: rate, names$"):
        from_dict(Outer, {"inner": {"zzz": 1}}, source="run.yaml")


@dataclass
class Required:
    name: str
    size: int = 1


@dataclass
class HasRequired:
    part: Required
    lr: float = 1e-3


def test_missing_required_key_is_named_not_a_python_type_error():
    with pytest.raises(ConfigError, match=r"^data.yaml: name is required \(Required\); add it$"):
        from_dict(Required, {"size": 2}, source="data.yaml")
    with pytest.raises(ConfigError, match=r"^run.yaml: part.name is required \(Required\); add it$"):
        from_dict(HasRequired, {"part": {"size": 2}}, source="run.yaml")
    with pytest.raises(ConfigError, match=r"^run.yaml: part is required \(HasRequired\); add it$"):
        from_dict(HasRequired, {"lr": 0.1}, source="run.yaml")
    assert from_dict(Required, {"name": "a"}) == Required("a")


@pytest.mark.parametrize(
    "data, msg",
    [
        ({"epochs": "3"}, "epochs must be an integer"),
        ({"epochs": True}, "epochs must be an integer"),
        ({"mode": "c"}, "mode must be one of"),
        ({"inner": 3}, "inner must be a mapping"),
        ({"epochs": 0}, "epochs must be >= 1"),
    ],
)
def test_bad_values(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(Outer, data)


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lr: 0.01\ninner:\n  rate: 0.5\n")
    data = apply_overrides(load_yaml(p), ["inner.rate=0.25", "epochs=4"])
    cfg = from_dict(Outer, data, source=str(p))
    assert cfg.inner.rate == 0.25 and cfg.epochs == 4 and cfg.lr == 0.01
    (tmp_path / "e.yaml").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_yaml(tmp_path / "e.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])
