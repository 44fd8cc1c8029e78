"""Pickle-free model artifacts, and exports to ONNX / torch.export (``export_model``)."""

from ctrzip.export.artifact import ArtifactError, artifact_sizes, check_destination, load, save
from ctrzip.export.encoder_files import MissingEncoderError, load_encoder
from ctrzip.export.exporter import export_model
from ctrzip.export.plain import ExportError

__all__ = [
    "ArtifactError",
    "ExportError",
    "MissingEncoderError",
    "artifact_sizes",
    "check_destination",
    "export_model",
    "load",
    "load_encoder",
    "save",
]
