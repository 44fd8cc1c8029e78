"""The data readers' user errors (a module of their own so every reader module can raise them)."""

from __future__ import annotations

from ctrzip.errors import UserError


class BadRowError(UserError):
    """A malformed input row under ``on_bad_rows: error``; the message names file, line, column."""


class DataFormatError(UserError):
    """The input as a whole is unusable: empty file, missing columns, unknown format."""
