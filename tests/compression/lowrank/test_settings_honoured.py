"""Low-rank settings that would be silently ignored are refused when the config is built."""

from __future__ import annotations

import pytest

from ctrzip.compression.lowrank import LowRankConfig
from ctrzip.config import ConfigError, from_dict


def test_calibration_cap_without_a_calibration_pass_is_refused():
    with pytest.raises(ValueError, match="calib_max_batches caps a calibration pass, and none runs"):
        LowRankConfig(mlp=False, embedding=True, calib_max_batches=3)
    with pytest.raises(ConfigError, match="lowrank.yaml: .*calib_max_batches"):
        from_dict(
            LowRankConfig,
            {"mlp": False, "embedding": True, "calib_max_batches": 3},
            source="lowrank.yaml",
        )
    # honoured where a pass runs: the MLP step, or embedding statistics from data
    assert LowRankConfig(calib_max_batches=3).calib_max_batches == 3
    cfg = LowRankConfig(mlp=False, embedding=True, embedding_stats="data", calib_max_batches=3)
    assert cfg.calib_max_batches == 3
