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
    """Strictly parse a run dict, checking every section before any work.

    ``model.name`` must be a registered model and ``model.params`` its config's fields;
    ``train`` is checked against ``TrainConfig`` and ``train.device`` against this machine.
    A relative ``dataset`` is found in the current folder, else next to the run file
    (``source``); a path that exists in both places is refused as ambiguous.

    Raises:
        ConfigError: naming ``source`` and the dotted key.
    """
    import ctrzip.models  # noqa: F401  (registers the zoo)
    from ctrzip.data.loader import resolve_device
    from ctrzip.models.base import MODELS
    from ctrzip.train.trainer import TrainConfig

    where = f"{source}: " if source else ""
    run = from_dict(RunConfig, data, source=source)
    try:
        model_cls = MODELS.get(run.model.name)
    except ConfigError as err:
        raise ConfigError(f"{where}model.name: {err}") from None
    from_dict(model_cls.config_class, run.model.params, source=source, path="model.params")
    tcfg = from_dict(TrainConfig, run.train, source=source, path="train")  # validate early
    try:
        resolve_device(tcfg.device)
    except ConfigError as err:
        raise ConfigError(f"{where}train.device: {err}") from None
    if source and not Path(run.dataset).is_absolute():
        candidate = Path(source).parent / run.dataset
        here = Path(run.dataset)
        if candidate.exists() and here.exists() and candidate.resolve() != here.resolve():
            raise ConfigError(
                f"{where}dataset: {run.dataset!r} exists both in the current folder and next to the run "
                f"file ({candidate}); give an absolute path"
            )
        if candidate.exists() and not here.exists():
            run.dataset = str(candidate)
    return run
