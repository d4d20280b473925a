"""The ad server's exceptions: one base class, so a top-level guard can tell ours from the rest.

``ParamError`` (a bad serve parameter, answered 422) belongs to the request parser, which the ad server
shares with the admin service: it is ``adplatform.params.ParamError``, a ``ValueError``, re-exported here.
"""

from __future__ import annotations

from adplatform.params import ParamError

__all__ = ["AdServerError", "ParamError"]


class AdServerError(Exception):
    """Base class of the ad server's errors."""
