"""``TrainConfig`` (how to train) and ``History`` (what happened): plain, JSON-able dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ctrzip.config import ConfigError


@dataclass
class TrainConfig:
    """How to train (see the module docstring for the loss).

    Args:
        epochs: passes over the training split.
        batch_size: rows per step.
        lr: Adam learning rate.
        embedding_l2: L2 strength on embedding parameters (FuxiCTR ``embedding_regularizer``).
        weight_l2: L2 strength on all other parameters (FuxiCTR ``net_regularizer``).
        lr_decay: factor applied to the lr after ``lr_patience`` evaluations without improvement.
        lr_patience: evaluations without validation-AUC improvement before each decay.
        min_lr: floor of the decayed lr (an lr already below it is left as it is, not raised).
        clip_grad_norm: max global gradient norm, or None for no clipping.
        early_stop_patience: evaluations (= epochs unless ``eval_every_steps``) without
            improvement before stopping.
        eval_every_steps: extra validation every this many steps (None = once per epoch).
        eval_at_start: validate the starting model too, as a candidate for the best state, so
            a fine-tune of a trained model never ends worse on validation than where it began
            (needs validation data: ``TrainingError`` without it).
        max_steps: stop after this many optimizer steps in total.
        amp: ``bf16`` / ``fp16`` autocast on CUDA (fp16 with a GradScaler); on CPU a warning
            says it trains in float32 instead.
        seed: seeds torch (dropout) and the batch order (epoch ``e`` uses ``seed + e``);
            ``ctrzip train`` also builds the model from it (``build_model(..., seed=)``).
        device: ``auto``, ``cpu``, ``cuda``...
        out_dir: folder for ``best.pt``, ``last.pt`` (resume state) and ``metrics.jsonl``.
        resume: continue from ``out_dir/last.pt`` if present and written by the same run
            (same model, training rows and settings; ``epochs``/``max_steps`` may be raised),
            else ``TrainingError`` naming what differs. False starts over, deleting the
            checkpoints and metrics log found in ``out_dir``.
        shuffle: shuffle training batches.
        progress: draw a progress bar with samples/s and ETA.
        deterministic: deterministic kernels on CPU (same seed -> same weights).
        fuse_embeddings: look up packable embedding tables with one gather per group
            (``FieldEmbedding.fuse``; same outputs and gradients, faster); false looks every
            field up on its own for this fit.
    """

    epochs: int = 2
    batch_size: int = 4096
    lr: float = 1e-3
    embedding_l2: float = 0.0
    weight_l2: float = 0.0
    lr_decay: float = 0.1
    lr_patience: int = 1
    min_lr: float = 1e-6
    clip_grad_norm: float | None = 10.0
    early_stop_patience: int = 2
    eval_every_steps: int | None = None
    eval_at_start: bool = False
    max_steps: int | None = None
    amp: Literal["off", "bf16", "fp16"] = "off"
    seed: int = 2024
    device: str = "auto"
    out_dir: str | None = None
    resume: bool = True
    shuffle: bool = True
    progress: bool = True
    deterministic: bool = True
    fuse_embeddings: bool = True

    def __post_init__(self) -> None:
        checks = {
            "epochs must be >= 1": self.epochs >= 1,
            "batch_size must be >= 1": self.batch_size >= 1,
            "lr must be > 0": self.lr > 0,
            "embedding_l2 must be >= 0": self.embedding_l2 >= 0,
            "weight_l2 must be >= 0": self.weight_l2 >= 0,
            "lr_decay must be in (0, 1]": 0 < self.lr_decay <= 1,
            "lr_patience must be >= 1": self.lr_patience >= 1,
            "min_lr must be >= 0": self.min_lr >= 0,
            "clip_grad_norm must be > 0 or null": self.clip_grad_norm is None or self.clip_grad_norm > 0,
            "early_stop_patience must be >= 1": self.early_stop_patience >= 1,
            "eval_every_steps must be >= 1 or null": self.eval_every_steps is None
            or self.eval_every_steps >= 1,
            "max_steps must be >= 1 or null": self.max_steps is None or self.max_steps >= 1,
            "amp must be off, bf16 or fp16": self.amp in ("off", "bf16", "fp16"),
            f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}": _is_device(self.device),
        }
        bad = [msg for msg, ok in checks.items() if not ok]
        if bad:
            raise ConfigError("; ".join(bad))


def _is_device(name: str) -> bool:
    """``auto`` or a string ``torch.device`` accepts (availability is checked when training)."""
    if name == "auto":
        return True
    try:
        torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


@dataclass
class History:
    """What ``fit`` did: one record per evaluation, the best one, and why it stopped.

    ``epochs`` holds one dict per evaluation (``epoch`` is 1-based; several per epoch
    with ``eval_every_steps``): epoch, step, train_loss (mean since the previous evaluation,
    regularization included), val_auc, val_logloss, lr (used during that period),
    samples_per_s (training only), elapsed_s (training + evaluation). Without validation
    data ``best`` is the last record.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    best_epoch: int = 0
    stopped_early: bool = False
    steps: int = 0
    resumed_at_step: int | None = None
