"""Pickle-free model artifacts."""

from ctrzip.export.artifact import ArtifactError, artifact_sizes, load, save

__all__ = ["ArtifactError", "artifact_sizes", "load", "save"]
