"""The one deep tower every model uses, so compression finds Linear layers by walking."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ctrzip._utils import check_rate, check_widths
from ctrzip.config import ConfigError

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "prelu": nn.PReLU}


def make_activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r} (known: {', '.join(_ACTIVATIONS)})") from None


class MLP(nn.Module):
    """Stack of Linear -> [BatchNorm] -> activation -> [Dropout] blocks, plus optional output Linear.

    Layers live in one ``nn.Sequential`` named ``layers`` so a Linear's fqn is stable
    (``mlp.layers.3``) and a compression method can swap it for a drop-in replacement.

    Args:
        in_dim: input width.
        hidden: widths of the hidden layers (may be empty).
        out_dim: width of a final plain Linear (no activation), or None for none.
        activation: name of the hidden activation.
        dropout: dropout rate after each hidden activation.
        batch_norm: BatchNorm1d after each hidden Linear.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (),
        out_dim: int | None = 1,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        check_widths("mlp", hidden)  # a config's tower widths and dropout reach here unchecked
        check_rate("dropout", dropout)
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.layers = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def linears(self) -> list[tuple[str, nn.Module]]:
        """(name within ``layers``, module) of every Linear-like layer, input first."""
        return [(n, m) for n, m in self.layers.named_children() if hasattr(m, "in_features")]
