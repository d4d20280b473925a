"""The ad server's exceptions: one base class, so a top-level guard can tell ours from the rest."""

from __future__ import annotations


class AdServerError(Exception):
    """Base class of the ad server's errors."""


class ParamError(AdServerError, ValueError):
    """A request parameter that is malformed or out of range; ``reason`` is the 422 response's detail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
