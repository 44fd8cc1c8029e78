"""The model zoo: importing this package registers every model module in ``MODELS``.

Each model lives in its own file; every module in this package except ``base`` is
imported here, so adding a model is adding a file.
"""

import importlib
import pkgutil

from ctrzip.models.base import MODELS, CTRModel, ModelConfig, build_model, register_model

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["MODELS", "CTRModel", "ModelConfig", "build_model", "register_model"]
