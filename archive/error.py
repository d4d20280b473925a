"""The archive package's base exception."""

from __future__ import annotations


class ArchiveError(RuntimeError):
    """An archive job could not start or finish; the message says why."""
