"""Pickle-free model artifacts."""

from ctrzip.export.artifact import ArtifactError, load, save

__all__ = ["ArtifactError", "load", "save"]
