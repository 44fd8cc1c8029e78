"""The ``ctrzip train`` run file: dataset + model + trainer sections (FuxiCTR-like YAML).

Example::

    dataset: data/criteo_encoded          # folder written by `ctrzip data encode`
    model:
      name: deepfm
      params: {embedding_dim: 16, mlp: [400, 400, 400]}
    train: {epochs: 2, batch_size: 4096, lr: 0.001, out_dir: runs/deepfm}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctrzip.config import ConfigError, from_dict


@dataclass
class ModelSection:
    name: str = "deepfm"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    dataset: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ConfigError("dataset: the encoded dataset folder is required")


def parse_run_config(data: dict[str, Any], source: str | None = None) -> RunConfig:
    """Strictly parse a run dict; the ``train`` section is checked against TrainConfig."""
    from ctrzip.train.trainer import TrainConfig

    run = from_dict(RunConfig, data, source=source)
    from_dict(TrainConfig, run.train, source=source, path="train")  # validate early
    if source and not Path(run.dataset).is_absolute():
        candidate = Path(source).parent / run.dataset
        if candidate.exists() and not Path(run.dataset).exists():
            run.dataset = str(candidate)
    return run
