"""Presets stay what they are: overriding one field of a preset changes only that field
(Python constructors, ``MECConfig.variant``, YAML/``--set`` through ``from_dict``)."""

from __future__ import annotations

import dataclasses

import pytest

from ctrzip.compression.mec.method import VARIANTS, MECConfig, PQConfig
from ctrzip.compression.mec.stage1 import CodeLearningConfig
from ctrzip.compression.mec.stage2 import FINETUNE_PRESET, RETRAIN_PRESET, StageTwoConfig
from ctrzip.config import ConfigError, apply_overrides, from_dict, to_dict

_SPECIAL = {
    "quantizer": lambda v: "rq" if v != "rq" else "pq",
    "encoder": lambda v: "identity" if v == "linear" else "linear",
    "weighting": lambda v: "count" if v != "count" else "log2",
    "rho": lambda v: 0.5,
    "steps": lambda v: 7,
    "epochs": lambda v: v + 1 if isinstance(v, int) else 2.5,
    "min_steps": lambda v: 9,
    "max_steps": lambda v: 5,
    "eval_every_steps": lambda v: 3,
    "lr": lambda v: v * 3,
}


def _other(name: str, value: object) -> object:
    """A valid value different from ``value``."""
    if name in _SPECIAL:
        return _SPECIAL[name](value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.5
    raise AssertionError(f"no alternative value for {name}={value!r}")


CL_FIELDS = [f.name for f in dataclasses.fields(CodeLearningConfig)]
STAGE_FIELDS = [f.name for f in dataclasses.fields(StageTwoConfig)]


def _conflicts(preset: CodeLearningConfig, name: str) -> bool:
    """A fixed ``steps`` budget and ``epochs``/``min_steps`` cannot both be set."""
    return preset.steps is not None and name in ("epochs", "min_steps")


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", CL_FIELDS)
def test_overriding_one_code_learning_field_of_a_variant_changes_only_that_field(variant, name):
    preset = MECConfig.variant(variant).code_learning
    value = _other(name, getattr(preset, name))
    if _conflicts(preset, name):
        with pytest.raises(ValueError, match="steps"):
            MECConfig.variant(variant, **{name: value})
        return
    got = MECConfig.variant(variant, **{name: value}).code_learning
    assert got == dataclasses.replace(preset, **{name: value})


@pytest.mark.parametrize("cls", [MECConfig, PQConfig])
@pytest.mark.parametrize("name", CL_FIELDS)
def test_overriding_one_code_learning_field_of_a_method_changes_only_that_field(cls, name):
    preset = cls().code_learning
    assert preset == CodeLearningConfig(**VARIANTS[cls.PRESET])
    value = _other(name, getattr(preset, name))
    expected = dataclasses.replace(preset, **{name: value})
    # Python: PQConfig(code_learning=CodeLearningConfig(steps=100))
    assert cls(code_learning=CodeLearningConfig(**{name: value})).code_learning == expected
    # YAML / --set code_learning.<name>=...
    assert from_dict(cls, {"code_learning": {name: value}}).code_learning == expected
    # the rest of the config is untouched
    assert (
        dataclasses.replace(cls(code_learning=CodeLearningConfig(**{name: value})), code_learning=preset)
        == cls()
    )


def test_basic_pq_with_one_knob_changed_stays_basic_pq():
    """The issue's example: ``--set code_learning.steps=100`` used to turn PQ into full MEC."""
    cfg = from_dict(PQConfig, apply_overrides({}, ["code_learning.steps=100"]))
    cl = cfg.code_learning
    assert (cl.steps, cl.weighting, cl.alpha, cl.beta) == (100, "none", 0.0, 0.0)
    cl2 = PQConfig(code_learning=CodeLearningConfig(steps=100)).code_learning
    assert cl2 == cl
    # an explicit value is honoured even where it equals the MEC default
    assert PQConfig(code_learning=CodeLearningConfig(weighting="log2")).code_learning.weighting == "log2"


@pytest.mark.parametrize(("stage", "preset"), [("finetune", FINETUNE_PRESET), ("retrain", RETRAIN_PRESET)])
@pytest.mark.parametrize("name", STAGE_FIELDS)
def test_overriding_one_stage_two_field_changes_only_that_field(stage, preset, name):
    base = MECConfig()
    start = getattr(base, stage)
    assert start == StageTwoConfig(**preset)
    value = _other(name, getattr(start, name))
    expected = dataclasses.replace(start, **{name: value})
    other = "retrain" if stage == "finetune" else "finetune"
    for cfg in (
        from_dict(MECConfig, {stage: {name: value}}),
        MECConfig(**{stage: StageTwoConfig(**{name: value})}),
    ):
        assert getattr(cfg, stage) == expected
        assert getattr(cfg, other) == getattr(base, other)


def test_round_trips_keep_every_value():
    for cfg in [
        PQConfig(code_learning=CodeLearningConfig(steps=3)),
        MECConfig(retrain=StageTwoConfig(lr=0.01)),
    ]:
        back = from_dict(type(cfg), to_dict(cfg))
        assert back == cfg
        assert dataclasses.replace(back, seed=5).code_learning == cfg.code_learning
    # PQConfig.variant builds the named variant, not PQ's own preset
    assert PQConfig.variant("mec").code_learning == MECConfig().code_learning


@pytest.mark.parametrize("cls", [MECConfig, PQConfig])
def test_python_mapping_for_a_nested_section_changes_only_its_keys(cls) -> None:  # type: ignore[no-untyped-def]
    # the Python twin of ``--set code_learning.steps=100``: a dict, not a CodeLearningConfig
    cfg = cls(code_learning={"steps": 100}, finetune={"lr": 0.5})
    assert cfg.code_learning == dataclasses.replace(cls().code_learning, steps=100)
    assert cfg.finetune == dataclasses.replace(cls().finetune, lr=0.5)
    with pytest.raises(ConfigError, match=r"stpes is not a field of CodeLearningConfig; did you mean steps"):
        cls(code_learning={"stpes": 100})
