"""``Parsed``: a validated serve query string, as ``adplatform.params.RequestParser`` caches it.

A msgspec Struct, in a module of its own because ``adplatform.params`` is compiled by mypyc
(``adplatform.native``), which drops a Struct's class options.
"""

from __future__ import annotations

import msgspec


class Parsed(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A validated query string: its demographics and context, with the location already resolved.

    Cached per query string and read by name on every request: a Struct's fields read in about half
    the time of a ``NamedTuple``'s properties.
    """

    device_type: str | None
    age: int | None
    gender: str | None
    income_bucket: str | None
    city: str | None
    state: str | None
    country: str
    #: Whether the query named any part of a location (then none of the profile's location is used).
    names_location: bool
