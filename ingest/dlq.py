"""Reading the dead-letter queue of campaign instructions: ``adplatform.dlq`` (the admin API reads it too)."""

from __future__ import annotations

from adplatform.dlq import DlqEntry, read_dlq

__all__ = ["DlqEntry", "read_dlq"]
