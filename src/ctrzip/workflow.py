"""End-to-end steps shared by the CLI and the demo: train a run, evaluate, report sizes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctrzip.config import from_dict
from ctrzip.data.dataset import EncodedDataset
from ctrzip.models.base import CTRModel, build_model
from ctrzip.run_config import RunConfig


@dataclass
class RunResult:
    model: CTRModel
    metrics: dict[str, dict[str, float]]  # split -> {"auc", "logloss", "n"}
    sizes: dict[str, Any]
    history: Any
    artifact: Path | None


def train_run(run: RunConfig, *, save_to: str | Path | None = None) -> RunResult:
    """Train ``run.model`` on ``run.dataset``, evaluate valid/test, optionally save an artifact."""
    from ctrzip.compression.sizes import size_report
    from ctrzip.export import save
    from ctrzip.train.trainer import TrainConfig, Trainer, evaluate

    data = EncodedDataset.open(run.dataset)
    model = build_model(run.model.name, data.schema, run.model.params, source="model")
    tcfg = from_dict(TrainConfig, run.train, path="train")
    history = Trainer(tcfg).fit(model, data["train"], data.splits.get("valid"))
    metrics = {
        name: evaluate(model, data[name], batch_size=max(tcfg.batch_size, 8192), device=tcfg.device)
        for name in ("valid", "test")
        if name in data.splits
    }
    artifact = save(save_to, model, extra={"metrics": metrics}) if save_to else None
    return RunResult(model, metrics, size_report(model), history, artifact)
