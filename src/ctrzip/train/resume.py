"""Whether a saved run may be resumed: the differences between it and this run.

A run resumes only when its ``TrainConfig`` (apart from the keys in ``RESUME_FREE``), its
model (name, config, parameter shapes) and its number of training rows match; the stop
limits in ``RESUME_LIMITS`` may be raised (the run is extended), never set below what was
already trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ctrzip.config import to_dict
from ctrzip.train import checkpoint as ckpt
from ctrzip.train.checks import split_labels
from ctrzip.train.train_config import TrainConfig

RESUME_FREE = frozenset({"progress", "out_dir", "resume", "device", "deterministic", "fuse_embeddings"})
RESUME_LIMITS = ("epochs", "max_steps")


def saved_run_diffs(cfg: TrainConfig, model: nn.Module, train: Any) -> list[str]:
    """How this run differs from the one saved in ``cfg.out_dir`` (``train.lr 0.001 -> 0.01``, ...).

    Empty when nothing is saved there, resume is off, or the runs match (raised stop limits
    are not differences: they extend the run). ``train`` is the training split or loader.
    """
    path = Path(cfg.out_dir) / ckpt.LAST if cfg.out_dir else None
    if path is None or not cfg.resume or not path.exists():
        return []
    _, meta = ckpt.load_checkpoint(path)
    saved_run = meta.get("run")
    return config_diffs(meta.get("config", {}), to_dict(cfg)) + run_diffs(
        saved_run, run_identity(model, train)
    )


def run_identity(model: nn.Module, loader: Any) -> dict[str, Any]:
    """What makes a saved run this run besides the TrainConfig: model spec, shapes, data rows."""
    labels = split_labels(loader)
    return {
        "model": model.spec() if callable(getattr(model, "spec", None)) else None,
        "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
        "train_rows": len(labels) if labels is not None else None,
    }


def config_diffs(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``train.KEY saved -> now`` for every TrainConfig field that must match to resume."""
    keys = sorted((set(saved) | set(now)) - RESUME_FREE - set(RESUME_LIMITS))
    return [f"train.{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]


def limit_diffs(saved: dict[str, Any], cfg: TrainConfig, meta: dict[str, Any]) -> list[str]:
    """Stop limits may be raised, never set below what the saved run already trained."""
    out = []
    epoch, in_epoch = meta.get("epoch", 0), meta.get("step_in_epoch", 0)
    if epoch > cfg.epochs or (epoch == cfg.epochs and in_epoch > 0):
        done = f"{epoch} epochs" + (f" and {in_epoch} steps" if in_epoch else "")
        out.append(f"train.epochs {saved.get('epochs')!r} -> {cfg.epochs} (it already trained {done})")
    if cfg.max_steps is not None and cfg.max_steps < meta.get("global_step", 0):
        out.append(
            f"train.max_steps {saved.get('max_steps')!r} -> {cfg.max_steps} "
            f"(it already trained {meta['global_step']} steps)"
        )
    return out


def run_diffs(saved: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """Model and data differences (checkpoints written before this check carry no ``run``)."""
    if saved is None:
        return []
    out = []
    s_model, n_model = saved.get("model") or {}, now.get("model") or {}
    if s_model and n_model and s_model.get("model") != n_model.get("model"):
        out.append(f"model {s_model.get('model')!r} -> {n_model.get('model')!r}")
    elif s_model and n_model:
        s_cfg, n_cfg = s_model.get("config", {}), n_model.get("config", {})
        for k in sorted(set(s_cfg) | set(n_cfg)):
            if s_cfg.get(k) != n_cfg.get(k):
                out.append(f"model.{k} {s_cfg.get(k)!r} -> {n_cfg.get(k)!r}")
    if not out and saved.get("shapes") != now.get("shapes"):  # e.g. compressed modules swapped in
        out.append("the model's parameters (names or shapes)")
    rows = (saved.get("train_rows"), now.get("train_rows"))
    if None not in rows and rows[0] != rows[1]:
        out.append(f"training rows {rows[0]} -> {rows[1]}")
    return out
