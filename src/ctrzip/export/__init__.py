"""Pickle-free model artifacts."""

from ctrzip.export.artifact import ArtifactError, artifact_sizes, check_destination, load, save
from ctrzip.export.encoder_files import MissingEncoderError, load_encoder

__all__ = [
    "ArtifactError",
    "MissingEncoderError",
    "artifact_sizes",
    "check_destination",
    "load",
    "load_encoder",
    "save",
]
