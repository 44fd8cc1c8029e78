"""Exception types for errors a user can cause (bad data, bad config, bad artifact, impossible setting).

Every subclass of :class:`UserError` is reported by the command line as one ``error:`` line
with exit code 2; any other exception is a bug and keeps its traceback (``--debug`` shows the
traceback for user errors too). Messages name the file, line, column, field or setting.
"""

from __future__ import annotations


class UserError(ValueError):
    """Base of every error caused by the user's input rather than by a bug in ctrzip."""


class CompressionError(UserError):
    """A compression request that cannot be carried out or can never make anything smaller."""


class TrainingError(UserError):
    """Training cannot start or cannot go on (empty or one-class split, non-finite loss)."""


__all__ = ["CompressionError", "TrainingError", "UserError"]
