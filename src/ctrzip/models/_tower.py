"""Shared deep-tower options for the zoo, so every model spells its MLP settings the same way."""

from __future__ import annotations

from dataclasses import dataclass

from ctrzip.config import ConfigError
from ctrzip.models.base import ModelConfig
from ctrzip.nn.mlp import MLP


@dataclass
class TowerConfig(ModelConfig):
    """Options of a model's deep tower.

    Args:
        mlp: hidden widths of the tower (empty: no deep tower where the model allows it).
        dropout: dropout after each hidden activation.
        batch_norm: BatchNorm1d after each hidden Linear.
        activation: hidden activation name.
    """

    mlp: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.0
    batch_norm: bool = False
    activation: str = "relu"

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(h < 1 for h in self.mlp):
            raise ConfigError(f"mlp widths must be >= 1, got {list(self.mlp)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


def make_tower(
    in_dim: int, config: TowerConfig, out_dim: int | None = 1, hidden: tuple[int, ...] | None = None
) -> MLP:
    """The ``MLP`` described by ``config`` reading ``in_dim`` features (``hidden`` overrides ``mlp``)."""
    return MLP(
        in_dim,
        config.mlp if hidden is None else hidden,
        out_dim=out_dim,
        activation=config.activation,
        dropout=config.dropout,
        batch_norm=config.batch_norm,
    )


def check_positive(**values: int) -> None:
    """Raise ConfigError naming the first of ``values`` that is below 1."""
    for name, v in values.items():
        if v < 1:
            raise ConfigError(f"{name} must be >= 1, got {v}")
