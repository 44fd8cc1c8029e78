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

from ctrzip.compression.api import CompressionMethod, register_method
from ctrzip.compression.posttraining import PostTrainingOptions, swap_and_report
from ctrzip.compression.select import match
from ctrzip.compression.shrink import compressed, decide, not_smaller, refuse_listed, require_some
from ctrzip.data.dataset import EncodedDataset
from ctrzip.data.loader import resolve_device
from ctrzip.errors import CompressionError
from ctrzip.models.base import CTRModel
from ctrzip.nn.int8_linear import Int8Linear


@dataclass
class LinearInt8Config(PostTrainingOptions):
    """int8 weight-only Linear layers.

    Args:
        layers: fqn globs of the Linear layers to quantize (None = every plain ``nn.Linear``);
            a listed layer that cannot shrink is an error.
        (and ``PostTrainingOptions``: eval_split, batch_size, device)
        version: config schema version.
    """

    layers: tuple[str, ...] | None = None
    version: int = 1


def _linear_bytes(m: nn.Linear) -> int:
    return 4 * (m.weight.numel() + (m.bias.numel() if m.bias is not None else 0))


def _int8_bytes(m: nn.Linear) -> int:
    return m.weight.numel() + 4 * m.out_features + (4 * m.out_features if m.bias is not None else 0)


@register_method("linear_int8", LinearInt8Config)
class LinearInt8(CompressionMethod[LinearInt8Config]):
    """Swap plain ``nn.Linear`` layers for ``Int8Linear``; no training."""

    def run(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]:
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
        decisions = []
        for fqn, m in linears.items():
            before, after = _linear_bytes(m), _int8_bytes(m)
            reason = not_smaller("int8 weights", before, after)
            if reason and cfg.layers is not None:
                raise refuse_listed(self.key, "layers", fqn, reason)
            decisions.append(decide(fqn, "linear", before, after, reason))
        require_some(self.key, decisions, "only Linear layers with more than one input shrink")
        builds = {d["target"]: Int8Linear.from_linear for d in compressed(decisions)}
        return swap_and_report(
            model, data, builds, decisions, eval_split=cfg.eval_split, batch_size=cfg.batch_size, device=dev
        )
