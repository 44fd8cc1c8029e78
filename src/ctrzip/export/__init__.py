"""Pickle-free model artifacts."""

from ctrzip.export.artifact import ArtifactError, artifact_sizes, check_destination, load, save

__all__ = ["ArtifactError", "artifact_sizes", "check_destination", "load", "save"]
