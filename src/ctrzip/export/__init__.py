"""Pickle-free model artifacts."""

from ctrzip.export.artifact import ArtifactError, check_destination, load, save

__all__ = ["ArtifactError", "check_destination", "load", "save"]
