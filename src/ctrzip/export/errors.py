"""The artifact's user errors (a module of their own so artifact.py and encoder_files.py share them)."""

from __future__ import annotations

from ctrzip.errors import UserError


class ArtifactError(UserError):
    """An artifact folder is missing, corrupt or inconsistent."""


class MissingEncoderError(ArtifactError):
    """The artifact has no ``encoder/``: it scores encoded batches but cannot encode raw rows."""
