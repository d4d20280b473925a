"""The blocked-campaign set of one worker: ``adplatform.blocked`` (shared with the admin service)."""

from __future__ import annotations

from adplatform.blocked import BlockedListener

__all__ = ["BlockedListener"]
