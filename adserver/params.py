"""Turning a serve request's path and query string into an ``AdRequest``: the rules and the parser live in
``adplatform.params`` (the admin service's explain parses requests with the same code); re-exported here."""

from __future__ import annotations

from adplatform.params import (
    ANONYMOUS_USER_ID,
    MAX_AGE,
    MAX_PARAM_CHARS,
    MAX_QUERY_BYTES,
    MAX_USER_ID_CHARS,
    ParamError,
    RequestParser,
    check_user_id,
    parse_query,
)
from adplatform.parsed import Parsed

__all__ = [
    "ANONYMOUS_USER_ID",
    "MAX_AGE",
    "MAX_PARAM_CHARS",
    "MAX_QUERY_BYTES",
    "MAX_USER_ID_CHARS",
    "ParamError",
    "Parsed",
    "RequestParser",
    "check_user_id",
    "parse_query",
]
