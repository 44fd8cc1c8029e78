"""The package version, in its own module so that any module can read it without importing
``ctrzip`` (whose ``__init__`` imports most of the package: that would be an import cycle)."""

__version__ = "0.1.0"
