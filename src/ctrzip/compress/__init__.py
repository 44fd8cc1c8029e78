"""Compression methods. Importing this package registers every method module."""

import importlib
import pkgutil

from ctrzip.compress.api import METHODS, CompressionMethod, compress, register_method

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("api",) and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["METHODS", "CompressionMethod", "compress", "register_method"]
