"""Atomic, pickle-free save/resume of training state (not the export format).

A checkpoint is ``torch.save`` of a dict holding only tensors, plain containers and
numbers (model / optimizer / scaler state dicts, RNG states) plus a ``meta`` JSON
string, so ``torch.load(..., weights_only=True)`` reads it back without unpickling
arbitrary objects. Writes go to a temp file in the same folder and are published with
``os.replace``, so a crash mid-write never leaves a truncated checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

BEST = "best.pt"
LAST = "last.pt"
METRICS = "metrics.jsonl"


def atomic_save(obj: dict[str, Any], path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` via a same-folder temp file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: str | Path, tensors: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Save state dicts plus JSON-able ``meta`` (stored as a JSON string)."""
    return atomic_save({**tensors, "meta": json.dumps(meta)}, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Load a checkpoint written by ``save_checkpoint``: ``(tensors, meta)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint here")
    obj = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(obj, dict) or "meta" not in obj:
        raise ValueError(f"{path}: not a ctrzip training checkpoint (no 'meta' entry)")
    meta = json.loads(obj.pop("meta"))
    return obj, meta


def rng_state() -> dict[str, Any]:
    """Torch CPU and CUDA generator states (dropout etc.); data order is seeded separately."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line (metrics log)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
