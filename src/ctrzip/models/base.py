"""``CTRModel``: the model base that makes compression model-agnostic.

A model is thin wiring around an injected ``FieldEmbedding`` (always ``self.embedding``),
optional first-order weights (``self.first_order``, a ``FieldEmbedding`` of dim 1) and
``MLP`` towers. ``forward`` returns logits ``[B]`` and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ctrzip.config import ConfigError, from_dict, to_dict
from ctrzip.data.batch import Batch
from ctrzip.data.schema import FeatureSchema
from ctrzip.nn.embedding.field import FieldEmbedding
from ctrzip.registry import Registry


@dataclass
class ModelConfig:
    """Options every model shares; models subclass this with their own fields.

    Args:
        embedding_dim: D for every field.
        embedding_init_std: normal init std of the tables.
    """

    embedding_dim: int = 16
    embedding_init_std: float = 1e-4

    def __post_init__(self) -> None:
        if self.embedding_dim < 1:
            raise ConfigError("embedding_dim must be >= 1")


class CTRModel(nn.Module):
    """Base of every zoo model.

    Subclasses set ``config_class``, build their body in ``__init__`` and implement
    ``forward``. Structure hooks for compression:
      * ``embedding_consumer()`` - fqn of the Linear fed *directly* by the flattened
        embeddings (so an embedding projection can be folded into it), else None.
      * ``aux_loss()`` - extra training loss (default none).
    """

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    registry_key: ClassVar[str] = ""

    def __init__(self, schema: FeatureSchema, config: ModelConfig, embedding: FieldEmbedding | None = None):
        super().__init__()
        self.schema = schema
        self.config = config
        self.embedding = embedding or FieldEmbedding(
            schema, config.embedding_dim, init_std=config.embedding_init_std
        )
        if self.embedding.dim != config.embedding_dim:
            raise ValueError(
                f"injected embedding has dim {self.embedding.dim}, config says {config.embedding_dim}"
            )

    @property
    def num_fields(self) -> int:
        return self.schema.num_fields

    def forward(self, batch: Batch) -> Tensor:  # logits [B]
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, batch: Batch) -> Tensor:
        """Click probabilities ``[B]``."""
        return torch.sigmoid(self(batch))

    def embedding_consumer(self) -> str | None:
        return None

    def aux_loss(self) -> Tensor | None:
        return None

    def spec(self) -> dict[str, Any]:
        """What rebuilds this model: registry key + config (stored in checkpoints/artifacts)."""
        return {"model": self.registry_key, "config": to_dict(self.config)}


MODELS: Registry[type[CTRModel]] = Registry("model")


def register_model(key: str):  # type: ignore[no-untyped-def]
    """Class decorator: register a CTRModel subclass under ``key``."""

    def deco(cls: type[CTRModel]) -> type[CTRModel]:
        cls.registry_key = key
        MODELS.register(key)(cls)
        return cls

    return deco


def build_model(
    name: str,
    schema: FeatureSchema,
    params: dict[str, Any] | ModelConfig | None = None,
    source: str | None = None,
    *,
    seed: int | None = None,
) -> CTRModel:
    """Build a registered model from a (strictly checked) params dict or config.

    Args:
        seed: initialize the weights from ``torch.manual_seed(seed)`` (the global generator's
            state is left as it was), so the same seed gives bit-identical initial weights;
            None draws from the global generator.

    Raises:
        ConfigError: unknown model name (``UnknownNameError``), unknown or invalid parameter,
            or a setting this schema cannot take; the message names ``source`` and the key.
    """
    import ctrzip.models  # noqa: F401  (registers the zoo)

    cls = MODELS.get(name)
    if isinstance(params, ModelConfig):
        cfg = params
    else:
        cfg = from_dict(cls.config_class, dict(params or {}), source=source, path="model")
    try:
        if seed is None:
            return cls(schema, cfg)
        with torch.random.fork_rng(devices=[]):  # weights are created on the CPU
            torch.manual_seed(seed)
            return cls(schema, cfg)
    except ConfigError as err:  # a setting this schema cannot take (e.g. pairs need 2 fields)
        raise ConfigError(f"model {name!r}: {err}") from None
