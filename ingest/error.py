"""The ingest package's base exception."""

from __future__ import annotations


class IngestError(Exception):
    """Base of every error raised by ``ingest``: bad instructions, bad CSV rows, producer failures."""
