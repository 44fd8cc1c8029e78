"""Dataset YAML configs: built-ins, strictness (file:key in errors), validation, overrides."""

from __future__ import annotations

import pytest

from ctrzip.config import ConfigError
from ctrzip.data.config import builtin_names, load_dataset_config


def test_builtin_criteo_and_avazu() -> None:
    assert {"criteo", "avazu"} <= set(builtin_names())
    c = load_dataset_config("criteo")
    assert c.format == "criteo_tsv" and c.min_count == 10 and c.label == "label"
    assert [f.name for f in c.features] == [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    assert all(f.transform == "log_square_bucket" for f in c.features[:13])
    a = load_dataset_config("avazu")
    names = [f.name for f in a.features]
    assert a.label == "click" and "id" not in names and "hour" not in names
    assert names[:2] == ["hour_of_day", "weekday"] and len(names) == 23
    assert {f.derive for f in a.features[:2]} == {"hour_of_day", "weekday"}


def test_unknown_key_names_file_and_key(tmp_path) -> None:
    path = tmp_path / "ds.yaml"
    path.write_text("name: x\nformat: csv\nfeatures:\n  - {name: a, type: categorical, min_cont: 3}\n")
    with pytest.raises(ConfigError, match=r"ds\.yaml: features\[0\]\.min_cont .*did you mean min_count"):
        load_dataset_config(path)
    path.write_text("name: x\nformat: csv\nfeatures: [{name: a, type: categorical}]\nsplitt: {}\n")
    with pytest.raises(ConfigError, match=r"ds\.yaml: splitt is not a field"):
        load_dataset_config(path)


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"name": "s", "type": "sequence", "max_len": 3}, "needs a separator"),
        ({"name": "s", "type": "sequence", "separator": "^"}, "max_len"),
        ({"name": "c", "type": "categorical", "transform": "dense"}, "numeric features only"),
        ({"name": "n", "type": "numeric", "transform": "bucket"}, "must be one of"),
        ({"name": "bad name", "type": "categorical"}, "identifier"),
        ({"name": "c", "type": "numeric", "derive": "weekday"}, "categorical features only"),
    ],
)
def test_feature_validation(feature: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_dataset_config({"name": "x", "format": "csv", "features": [feature]})


def test_split_validation_and_overrides() -> None:
    base = {"name": "x", "format": "csv", "features": [{"name": "a", "type": "categorical"}]}
    with pytest.raises(ConfigError, match="sum to 1"):
        load_dataset_config({**base, "split": {"ratios": [0.5, 0.1, 0.1]}})
    with pytest.raises(ConfigError, match="2 or 3"):
        load_dataset_config({**base, "split": {"ratios": [1.0]}})
    c = load_dataset_config("criteo", ["split.ratios=[0.7,0.2,0.1]", "split.seed=7", "on_bad_rows=skip"])
    assert c.split.ratios == [0.7, 0.2, 0.1] and c.split.seed == 7 and c.on_bad_rows == "skip"
    with pytest.raises(ConfigError, match="on_bad_rows must be one of"):
        load_dataset_config("criteo", ["on_bad_rows=ignore"])
    with pytest.raises(ConfigError, match="unknown dataset schema"):
        load_dataset_config("kriteo")


def test_dense_defaults_and_round_trip() -> None:
    c = load_dataset_config(
        {"name": "x", "format": "csv", "features": [{"name": "a", "type": "numeric", "transform": "dense"}]}
    )
    assert c.features[0].normalizer == "zscore" and c.features[0].is_dense
    assert load_dataset_config(c.to_dict()) == c


def test_numeric_is_dense_by_default_and_bucketing_is_explicit() -> None:
    """Kind 4 D: a generic ``numeric`` field is a dense value (FuxiCTR); the Criteo
    log-square bucketing is asked for, as the built-in criteo schema does."""
    c = load_dataset_config({"name": "x", "format": "csv", "features": [{"name": "age", "type": "numeric"}]})
    f = c.features[0]
    assert f.transform == "dense" and f.normalizer == "zscore" and f.is_dense and f.width == 0
    b = load_dataset_config(
        {
            "name": "x",
            "format": "csv",
            "features": [{"name": "age", "type": "numeric", "transform": "log_square_bucket"}],
        }
    )
    assert not b.features[0].is_dense and b.features[0].width == 1
    criteo = load_dataset_config("criteo")
    assert [f.transform for f in criteo.features if f.type == "numeric"] == ["log_square_bucket"] * 13


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": [{"name": "a", "type": "numeric", "min_count": 5}]}, "min_count applies to ids"),
        ({"split": {"method": "files", "ratios": [0.5, 0.5]}}, "do not apply to split method 'files'"),
        ({"split": {"method": "files", "seed": 3}}, "do not apply to split method 'files'"),
        ({"split": {"method": "sequential", "seed": 3}}, "split.seed applies to method 'random' only"),
        ({"version": 2}, "schema version 1, got 2"),
        ({"format": "parquet", "encoding": "latin-1"}, "encoding applies to text formats"),
        ({"encoding": "cp1252"}, "encoding must be one of"),
        ({"block_mb": 0.0001}, "block_mb must be at least 1 KiB"),
    ],
)
def test_settings_that_would_be_ignored_are_refused(change: dict, message: str) -> None:
    base = {"name": "x", "format": "csv", "features": [{"name": "a", "type": "categorical"}]}
    with pytest.raises(ConfigError, match=message):
        load_dataset_config({**base, **change})


def test_split_defaults_per_method() -> None:
    base = {"name": "x", "format": "csv", "features": [{"name": "a", "type": "categorical"}]}
    r = load_dataset_config(base).split
    assert (r.method, r.ratios, r.seed) == ("random", [0.8, 0.1, 0.1], 2024)
    s = load_dataset_config({**base, "split": {"method": "sequential"}}).split
    assert (s.ratios, s.seed) == ([0.8, 0.1, 0.1], None)
    f = load_dataset_config({**base, "split": {"method": "files"}}).split
    assert (f.ratios, f.seed, f.names) == (None, None, ("train", "valid", "test"))
    for c in (r, s, f):
        assert load_dataset_config({**base, "split": c.__dict__}).split == c


def test_saved_encoder_with_unused_split_keys_still_loads(tmp_path) -> None:
    """Encoders saved before unused split keys were refused recorded their defaults."""
    import json

    from ctrzip.data.encode import Encoder

    cfg = {"name": "x", "format": "csv", "features": [{"name": "a", "type": "categorical"}]}
    state = {"version": 1, "normalizers": {}}
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "a.json").write_text(json.dumps({"values": ["u"]}))
    for split in (
        {"method": "files", "ratios": [0.8, 0.1, 0.1], "seed": 2024},
        {"method": "sequential", "seed": 2024},
    ):
        (tmp_path / "encoder.json").write_text(json.dumps({**state, "config": {**cfg, "split": split}}))
        enc = Encoder.load(tmp_path)
        assert enc.config.split.method == split["method"] and enc.config.split.seed is None
