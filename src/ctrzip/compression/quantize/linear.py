"""int8 weight-only quantization of the dense network's Linear layers (method ``linear_int8``).

Every plain ``nn.Linear`` outside the embedding tables (MLP towers, cross and gate layers of
DCN/DCNv2/GDCN, attention projections, output heads) becomes an ``Int8Linear``: int8 weights
with a float32 scale per output channel (~4x fewer bytes), activations in float. Modules
that are *subclasses* of Linear with extra behaviour (a folded first layer) are left to
their own method. A layer whose int8 form is not smaller (input width 1) stays as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ctrzip.compression.api import CompressionMethod, MetricsReport, TargetDecision, register_method
from ctrzip.compression.select import match
from ctrzip.compression.shrink import decide, not_smaller, require_some
from ctrzip.compression.sizes import size_report
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.loader import resolve_device
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel
from ctrzip.nn.int8_linear import Int8Linear
from ctrzip.nn.swappable import replace_module


@dataclass
class LinearInt8Config:
    """int8 weight-only Linear layers.

    Args:
        layers: fqn globs of the Linear layers to quantize (None = every plain ``nn.Linear``);
            a listed layer that cannot shrink is an error.
        eval_split: split whose metrics are reported before and after (None: no evaluation).
        batch_size: rows per evaluation forward.
        device: ``auto``, ``cpu`` or ``cuda``.
        version: config schema version.
    """

    layers: tuple[str, ...] | None = None
    eval_split: str | None = "valid"
    batch_size: int = 8192
    device: str = "auto"
    version: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise CompressionError(f"linear_int8: batch_size must be >= 1, got {self.batch_size}")


def _linear_bytes(m: nn.Linear) -> int:
    return 4 * (m.weight.numel() + (m.bias.numel() if m.bias is not None else 0))


def _int8_bytes(m: nn.Linear) -> int:
    return m.weight.numel() + 4 * m.out_features + (4 * m.out_features if m.bias is not None else 0)


@register_method("linear_int8", LinearInt8Config)
class LinearInt8(CompressionMethod[LinearInt8Config]):
    """Swap plain ``nn.Linear`` layers for ``Int8Linear``; no training."""

    def run(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
        from ctrzip.train import evaluate

        cfg = self.config
        dev = resolve_device(cfg.device)
        model.to(dev)
        linears = {n: m for n, m in model.named_modules() if type(m) is nn.Linear}
        if cfg.layers is not None:
            missing = [p for p in cfg.layers if not match(linears, [p])]
            if missing:
                raise CompressionError(
                    f"linear_int8: layers {missing} match no nn.Linear (have: {', '.join(linears) or 'none'})"
                )
            linears = {n: linears[n] for n in match(linears, cfg.layers)}
        decisions: list[TargetDecision] = []
        plan: list[str] = []
        for fqn, m in linears.items():
            before, after = _linear_bytes(m), _int8_bytes(m)
            reason = not_smaller("int8", before, after)
            if reason and cfg.layers is not None:
                raise CompressionError(f"linear_int8: layer {fqn!r} cannot be compressed: {reason}")
            decisions.append(decide(fqn, "linear", before, after, reason))
            if not reason:
                plan.append(fqn)
        require_some("linear_int8", decisions, "only plain nn.Linear layers that shrink are quantized")

        def score() -> dict[str, float] | None:
            if data is None or cfg.eval_split is None:
                return None
            return evaluate(model, data[cfg.eval_split], batch_size=cfg.batch_size, device=dev)

        bytes_before = size_report(model)["total"]["bytes"]
        metrics = MetricsReport(before=score())
        errors: dict[str, float] = {}
        for fqn in plan:
            old = linears[fqn]
            new = Int8Linear.from_linear(old)
            w = old.weight.detach().float()
            errors[fqn] = float((new.weight - w).norm() / w.norm().clamp_min(1e-30))
            replace_module(model, fqn, new)
        metrics["direct"] = score()
        metrics["final"] = metrics["direct"]
        after = size_report(model)["total"]["bytes"]
        return {
            "targets": decisions,
            "relative_error": errors,
            "metrics": metrics,
            "bytes": {"before": bytes_before, "after": after},
            "ratio": bytes_before / max(1, after),
        }
