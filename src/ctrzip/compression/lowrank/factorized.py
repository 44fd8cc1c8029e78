"""Shared driver of the factorized methods (``lowrank``, ``svd``, ``tt``).

Each step (MLP layers, then embedding tables) is: swap modules -> [fold + parity check]
-> evaluate ("direct") -> fine-tune with ``Trainer.fit`` -> evaluate ("fine-tuned"), as in
the paper's pipeline (section 3.3 end, appendix A.2). Subclasses only say how to build the
replacement modules.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor, nn

from ctrzip.compression.api import CompressionMethod
from ctrzip.compression.lowrank.fold import fold_into_consumer
from ctrzip.config import ConfigError
from ctrzip.data.batch import Batch
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.loader import BatchLoader, resolve_device
from ctrzip.data.schema import FeatureSchema
from ctrzip.models.base import CTRModel

FOLD_TOLERANCE = 1e-5


@dataclass
class StepOptions:
    """Options shared by the factorized methods (evaluation and fine-tuning after each step).

    Args:
        finetune_epochs: epochs of ``Trainer.fit`` after each step (0 = no fine-tuning).
        lr: fine-tuning Adam lr; set it to the base model's *last* lr (e.g. 1e-4 after decay).
        finetune_batch_size: rows per fine-tuning step.
        embedding_l2: fine-tuning L2 on embedding parameters (``TrainConfig.embedding_l2``).
        weight_l2: fine-tuning L2 on other parameters.
        batch_size: rows per calibration / evaluation forward.
        eval_split: split evaluated "direct" and "fine-tuned" (None = no evaluation).
        device: ``auto``, ``cpu``, ``cuda``.
        seed: fine-tuning seed.
        progress: progress bars.
    """

    finetune_epochs: int = 1
    lr: float = 1e-4
    finetune_batch_size: int = 4096
    embedding_l2: float = 0.0
    weight_l2: float = 0.0
    batch_size: int = 8192
    eval_split: str | None = "valid"
    device: str = "auto"
    seed: int = 2024
    progress: bool = False

    def __post_init__(self) -> None:
        if self.finetune_epochs < 0:
            raise ConfigError("finetune_epochs must be >= 0")
        if self.lr <= 0:
            raise ConfigError("lr must be > 0")
        if self.batch_size < 1 or self.finetune_batch_size < 1:
            raise ConfigError("batch sizes must be >= 1")


def check_rank(name: str, rank: int | None, variance: float | None) -> None:
    """Exactly one of a rank >= 1 or a variance fraction in (0, 1]."""
    if rank is not None and variance is not None:
        raise ConfigError(f"set either {name} rank or variance, not both")
    if rank is None and variance is None:
        raise ConfigError(f"set {name} rank or variance")
    if rank is not None and rank < 1:
        raise ConfigError(f"{name} rank must be >= 1, got {rank}")
    if variance is not None and not 0.0 < variance <= 1.0:
        raise ConfigError(f"{name} variance must be in (0, 1], got {variance}")


def count_params(model: nn.Module) -> int:
    """All parameter elements (the paper's "Param. (M)" x 1e6)."""
    return sum(p.numel() for p in model.parameters())


def probe_batch(schema: FeatureSchema, n: int, device: torch.device, seed: int = 0) -> Batch:
    """Random valid ids/values, for parity checks that need no data."""
    g = torch.Generator().manual_seed(seed)
    cols = [torch.randint(0, f.vocab_size, (n, f.max_len), generator=g) for f in schema.sparse_fields]
    sparse = torch.cat(cols, 1) if cols else torch.zeros(n, 0, dtype=torch.int64)
    dense = torch.randn(n, len(schema.dense_fields), generator=g)
    return Batch(sparse, dense, torch.zeros(n)).to(device)


@torch.no_grad()
def _logits(model: nn.Module, batch: Batch) -> Tensor:
    was = model.training
    model.eval()
    try:
        return model(batch).double()
    finally:
        model.train(was)


def fold_checked(model: CTRModel, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Fold into ``model.embedding_consumer()`` and verify logits are unchanged.

    Raises:
        RuntimeError: folded and unfolded logits differ by more than ``FOLD_TOLERANCE``
            (relative to max(1, |logit|)): the consumer's column layout is not what the model declares.
    """
    consumer = model.embedding_consumer()
    if consumer is None:
        return {"folded": False, "reason": "model declares no embedding consumer"}
    batch = probe_batch(model.schema, 256, device, seed)
    before = _logits(model, batch)
    rep = fold_into_consumer(model, consumer)
    if rep["folded"]:
        diff = float((_logits(model, batch) - before).abs().max())
        rep["max_abs_diff"] = diff
        if diff > FOLD_TOLERANCE * max(1.0, float(before.abs().max())):
            raise RuntimeError(f"folding into {consumer} changed logits by {diff:.3g}")
    return rep


C = TypeVar("C", bound=StepOptions)


class FactorizedMethod(CompressionMethod[C], Generic[C]):
    """Runs ``compress_mlp`` and/or ``compress_embeddings`` with evaluation and fine-tuning."""

    def compress_mlp(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        raise NotImplementedError

    def compress_embeddings(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        raise NotImplementedError

    def steps(self) -> list[str]:
        """Which of ``mlp`` / ``embedding`` this config runs, in order."""
        return [s for s in ("mlp", "embedding") if getattr(self.config, s, False)]

    def run(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        cfg = self.config
        device = resolve_device(cfg.device)
        model.to(device)
        report: dict[str, Any] = {"params_before": count_params(model)}
        for step in self.steps():
            t0 = time.perf_counter()
            if step == "mlp":
                rep = {"layers": self.compress_mlp(model, data)}
            else:
                rep = self.compress_embeddings(model, data)
            model.to(device)
            rep["params"] = count_params(model)
            rep["compress_s"] = round(time.perf_counter() - t0, 3)
            rep.update(evaluate_and_finetune(model, data, cfg, device))
            report[step] = rep
        report["params_after"] = count_params(model)
        return report

    def loader(self, data: EncodedDataset, split: str, device: torch.device) -> BatchLoader:
        return BatchLoader(data[split], batch_size=self.config.batch_size, shuffle=False, device=device)


def evaluate_and_finetune(
    model: CTRModel, data: EncodedDataset | None, cfg: StepOptions, device: torch.device
) -> dict[str, Any]:
    """Evaluate ("direct"), fine-tune with ``Trainer.fit``, evaluate again ("finetuned")."""
    from ctrzip.train import TrainConfig, Trainer, evaluate

    out: dict[str, Any] = {}
    split = cfg.eval_split if data is not None and cfg.eval_split in data.splits else None
    if split is not None:
        assert data is not None
        out["direct"] = evaluate(model, data[split], batch_size=cfg.batch_size, device=device)
    if cfg.finetune_epochs > 0 and data is not None and "train" in data.splits:
        tc = TrainConfig(
            epochs=cfg.finetune_epochs,
            batch_size=cfg.finetune_batch_size,
            lr=cfg.lr,
            embedding_l2=cfg.embedding_l2,
            weight_l2=cfg.weight_l2,
            seed=cfg.seed,
            device=str(device),
            out_dir=None,
            resume=False,
            progress=cfg.progress,
        )
        hist = Trainer(tc).fit(model, data["train"], None)
        out["finetune"] = {"epochs": cfg.finetune_epochs, "lr": cfg.lr, "steps": hist.steps}
        if split is not None:
            assert data is not None
            out["finetuned"] = evaluate(model, data[split], batch_size=cfg.batch_size, device=device)
    return out


def finetune_control(model: CTRModel, config: StepOptions, data: EncodedDataset) -> dict[str, Any]:
    """The same-protocol control: a copy of the dense model fine-tuned exactly like a step.

    PROTOCOL.md point 1: CTR models overfit on extra epochs, so compressed models are
    compared with the dense model given the same extra training.
    """
    return evaluate_and_finetune(copy.deepcopy(model), data, config, resolve_device(config.device))
