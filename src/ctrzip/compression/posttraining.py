"""The shared run of post-training methods (row-wise, int8 Linear, mixed bands): swap, measure.

A post-training method decides per target (``shrink.decide``), then hands the targets to
``swap_and_report``: it evaluates ``eval_split`` before, swaps every module through
``replace_module`` (links handed over), evaluates again ("direct"; no fine-tune, so "final"
equals it), and returns the report of ``compression.api``'s contract with each swap's
relative reconstruction error ``||W' - W||_F / ||W||_F`` (tables: all rows; Linear: weights).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ctrzip.compression.api import MetricsReport, TargetDecision
from ctrzip.compression.sizes import stored_bytes
from ctrzip.data.dataset import EncodedDataset
from ctrzip.errors import CompressionError
from ctrzip.nn.embedding.base import EmbeddingTable
from ctrzip.nn.swappable import replace_module


@dataclass
class PostTrainingOptions:
    """Options every post-training method shares (its config's first fields).

    Args:
        eval_split: split whose metrics are reported before and after (None: no evaluation).
        batch_size: rows per evaluation forward.
        device: ``auto``, ``cpu`` or ``cuda``.

    Raises:
        CompressionError: ``batch_size`` below 1.
    """

    eval_split: str | None = "valid"
    batch_size: int = 8192
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise CompressionError(f"{type(self).__name__}: batch_size must be >= 1, got {self.batch_size}")


def _dense_view(module: nn.Module) -> Tensor:
    """The float matrix a module represents: a table's rows or a Linear's weight."""
    if isinstance(module, EmbeddingTable):
        return module.materialize().float()
    return module.weight.detach().float()  # type: ignore[operator]


def swap_and_report(
    model: nn.Module,
    data: EncodedDataset | None,
    builds: Mapping[str, Callable[[nn.Module], nn.Module]],
    decisions: Sequence[TargetDecision],
    *,
    eval_split: str | None,
    batch_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """Swap ``model.<fqn>`` for ``builds[fqn](old)`` for every fqn; return the method's report.

    Args:
        model: the model, already on ``device``.
        data: dataset for the before/after evaluation (None: no evaluation).
        builds: fqn -> function of the old module returning its replacement.
        decisions: every target's ``TargetDecision`` (kept ones included).
        eval_split: split evaluated before and after (None: no evaluation).
        batch_size: rows per evaluation forward.
        device: where the new modules go.

    Returns:
        ``{"targets", "relative_error", "metrics", "bytes", "ratio"}`` (see ``compression.api``).
    """
    from ctrzip.compression.sharded import sharded_evaluate

    def score() -> dict[str, float] | None:
        if data is None or eval_split is None:
            return None
        return sharded_evaluate(model, data[eval_split], batch_size=batch_size, device=device)

    before = stored_bytes(model)
    metrics = MetricsReport(before=score())
    errors: dict[str, float] = {}
    for fqn, build in builds.items():
        old = model.get_submodule(fqn)
        new = build(old).to(device)
        with torch.no_grad():
            ref = _dense_view(old)
            errors[fqn] = float((_dense_view(new) - ref).norm() / ref.norm().clamp_min(1e-30))
        replace_module(model, fqn, new)
    metrics["direct"] = score()
    metrics["final"] = metrics["direct"]
    after = stored_bytes(model)
    return {
        "targets": list(decisions),
        "relative_error": errors,
        "metrics": metrics,
        "bytes": {"before": before, "after": after},
        "ratio": before / max(1, after),
    }
