"""The model zoo: importing this package registers every model in ``MODELS``."""

from ctrzip.models import deepfm  # noqa: F401
from ctrzip.models.base import MODELS, CTRModel, ModelConfig, build_model, register_model

__all__ = ["MODELS", "CTRModel", "ModelConfig", "build_model", "register_model"]
