"""Turning a serve request's path and query string into an ``AdRequest``: parsing, validation, merging.

Rules (also in the OpenAPI document): query parameters win over the stored profile; a parameter that is
absent means "unknown" (only ``All`` targeting matches it); a parameter that is present but empty,
oversized, or outside its vocabulary is a 422 with the reason. The privacy user ``1111-1111-1111-1111``
gets no profile lookup and no demographics (age, gender, income), even when the query names them: only
``All`` demographic targeting reaches it. Device, city, state and country are context, not identity.

Shared by the ad server (every serve request) and the admin service (explain), so both understand a
request the same way.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote_plus

from adplatform.parsed import Parsed
from adplatform.profiles import ProfileSource
from index.campaign import DEVICE_TYPES, GENDERS, INCOME_BUCKETS
from index.geo import GeoTable, Location
from index.targeting import AdRequest

ANONYMOUS_USER_ID: Final = "1111-1111-1111-1111"
MAX_USER_ID_CHARS: Final = 64
MAX_PARAM_CHARS: Final = 100
MAX_QUERY_BYTES: Final = 2048
MAX_AGE: Final = 150
#: Letters, digits and ``- _ . : @`` (UUIDs, the privacy id, e-mail-like ids).
_USER_ID: Final = re.compile(r"[A-Za-z0-9_.:@-]+")
#: Vocabularies, matched case-insensitively and returned in the spelling campaigns target.
_DEVICES: Final = {d.casefold(): d for d in DEVICE_TYPES}
_GENDERS: Final = {g.casefold(): g for g in GENDERS}
_INCOMES: Final = {i.casefold(): i for i in INCOME_BUCKETS}
_KNOWN: Final = frozenset(("device_type", "city", "state", "country", "age", "gender", "income_bucket"))


class ParamError(ValueError):
    """A request parameter that is malformed or out of range; ``reason`` is the 422 response's detail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_user_id(user_id: str) -> str:
    if len(user_id) > MAX_USER_ID_CHARS:
        raise ParamError(f"user_id: longer than {MAX_USER_ID_CHARS} characters")
    # Fast path for UUIDs and the privacy id (letters, digits, dashes); the regex for the rest.
    if user_id.isascii() and user_id.replace("-", "").isalnum():
        return user_id
    if not user_id.isascii() or _USER_ID.fullmatch(user_id) is None:
        raise ParamError("user_id: only letters, digits and - _ . : @ are allowed")
    return user_id


def parse_query(raw: bytes) -> dict[str, str]:
    """The known parameters of a query string (last one wins); unknown names are ignored."""
    if len(raw) > MAX_QUERY_BYTES:
        raise ParamError(f"query string longer than {MAX_QUERY_BYTES} bytes")
    params: dict[str, str] = {}
    if not raw:
        return params
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ParamError("query string: non-ASCII bytes; percent-encode them") from None
    for pair in text.split("&"):
        name, _, value = pair.partition("=")
        if name not in _KNOWN:
            continue
        if "%" in value or "+" in value:
            try:
                value = unquote_plus(value, errors="strict")
            except UnicodeDecodeError:
                raise ParamError(f"{name}: percent-encoded bytes are not UTF-8") from None
        if not value:
            raise ParamError(f"{name}: empty (omit the parameter when it is unknown)")
        if len(value) > MAX_PARAM_CHARS:
            raise ParamError(f"{name}: longer than {MAX_PARAM_CHARS} characters")
        params[name] = value
    return params


def _member(params: dict[str, str], name: str, vocabulary: dict[str, str]) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    canonical = vocabulary.get(value.casefold())
    if canonical is None:
        raise ParamError(f"{name}: unknown value {value!r}; expected one of {', '.join(vocabulary.values())}")
    return canonical


def _age(params: dict[str, str]) -> int | None:
    value = params.get("age")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_AGE:
        raise ParamError(f"age: expected a whole number from 0 to {MAX_AGE}, got {value!r}")
    return int(value)


class RequestParser:
    """Builds ``AdRequest``s, remembering validated query strings and resolved locations.

    Serve traffic repeats the same few thousand query strings (device × city × age ...), so a validated
    query is kept by its raw bytes: a repeat costs one dict lookup instead of parsing, percent-decoding
    and vocabulary checks. Both caches are bounded: when full they are emptied (cheap, and a flood of
    distinct junk cannot grow memory). Rejected queries are never cached.
    """

    def __init__(self, geo: GeoTable, *, max_entries: int = 65_536) -> None:
        self._geo = geo
        self._max_entries = max_entries
        self._queries: dict[bytes, Parsed] = {}
        self._locations: dict[tuple[str | None, str | None, str | None], Location] = {}

    def _resolve(self, city: str | None, state: str | None, country: str | None) -> Location:
        key = (city, state, country)
        location = self._locations.get(key)
        if location is None:
            if len(self._locations) >= self._max_entries:
                self._locations.clear()
            location = self._locations[key] = self._geo.resolve(city, state, country)
        return location

    def _parse(self, query: bytes) -> Parsed:
        params = parse_query(query)
        device = _member(params, "device_type", _DEVICES)
        age = _age(params)
        gender = _member(params, "gender", _GENDERS)
        income = _member(params, "income_bucket", _INCOMES)
        city, state, country = params.get("city"), params.get("state"), params.get("country")
        names_location = city is not None or state is not None or country is not None
        location = self._resolve(city, state, country)
        return Parsed(
            device_type=device,
            age=age,
            gender=gender,
            income_bucket=income,
            city=location.city,
            state=location.state,
            country=location.country,
            names_location=names_location,
        )

    def build(self, user_id: str, query: bytes, profiles: ProfileSource) -> AdRequest:
        """The ad request for ``user_id``: the query's values over the profile's, the location resolved
        (canonical spelling, implied state and country); raises ``ParamError``."""
        check_user_id(user_id)
        parsed = self._queries.get(query)
        if parsed is None:
            parsed = self._parse(query)
            if len(self._queries) >= self._max_entries:
                self._queries.clear()
            self._queries[query] = parsed
        device, age, gender, income = parsed.device_type, parsed.age, parsed.gender, parsed.income_bucket
        city, state, country = parsed.city, parsed.state, parsed.country
        if user_id == ANONYMOUS_USER_ID:
            # Demographics were validated all the same (bad input is bad input), but are not used.
            return AdRequest(user_id=user_id, device_type=device, city=city, state=state, country=country)
        profile = profiles.get(user_id)
        if profile is not None:
            device = device or profile.device_type
            age = profile.age if age is None else age
            gender = gender or profile.gender
            income = income or profile.income_bucket
            if not parsed.names_location:
                # A location comes whole from one source: a query city never mixes with a profile state.
                city, state, country = self._resolve(profile.city, profile.state, profile.country)
        return AdRequest(
            user_id=user_id,
            device_type=device,
            city=city,
            state=state,
            country=country,
            age=age,
            gender=gender,
            income_bucket=income,
        )
