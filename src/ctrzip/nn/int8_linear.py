"""``Int8Linear``: a drop-in for ``nn.Linear`` with int8 weights (weight-only quantization).

Each output channel ``o`` stores ``q[o] = round(W[o] / s[o])`` in int8 with the symmetric scale
``s[o] = max|W[o]| / 127`` (float32); ``y = x (q * s)^T + b``. Activations stay in floating
point, so the only error is the weight rounding (at most ``s[o] / 2`` per weight). The weight
is dequantized per forward with plain tensor ops, which run on CPU and CUDA in every supported
torch (``torch._weight_int8pack_mm`` exists too but measured ~20x slower than this on CPU).
Weights are frozen buffers; the bias stays a trainable parameter.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ctrzip.nn.swappable import register_swappable


@register_swappable
class Int8Linear(nn.Module):
    """int8 weight-only Linear ``in_features -> out_features``.

    Args:
        in_features: input width.
        out_features: output width.
        bias: keep a float32 bias.

    Shapes: ``[..., in_features] -> [..., out_features]``; bytes = ``out*in`` (int8) +
    ``4*out`` (scales) + ``4*out`` (bias).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """Quantize a trained ``nn.Linear`` (same device)."""
        w = linear.weight.detach().float()
        new = cls(linear.in_features, linear.out_features, linear.bias is not None).to(w.device)
        scale = w.abs().amax(dim=1) / 127.0
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero row: q = 0
        with torch.no_grad():
            new.qweight.copy_((w / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
            new.scale.copy_(scale)
            if linear.bias is not None:
                new.bias.copy_(linear.bias.detach())
        return new

    @property
    def weight(self) -> Tensor:
        """The dequantized float32 weight ``[out, in]`` (read-only view for folding/export)."""
        return self.qweight.float() * self.scale[:, None]

    def forward(self, x: Tensor) -> Tensor:
        w = self.qweight.to(x.dtype) * self.scale.to(x.dtype)[:, None]
        return nn.functional.linear(x, w, self.bias)

    def spec(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
        }

    @classmethod
    def empty(cls, **spec: Any) -> Int8Linear:
        return cls(**spec)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"
