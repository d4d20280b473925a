"""User profiles (``online_ads."user"``): what a request needs of a user, the in-memory table, and the
queries that fill it (every user for the ad server, one user for the admin service's explain)."""

from __future__ import annotations

from typing import Final, Protocol

import asyncpg
import msgspec

_QUERY: Final = (
    'SELECT user_id, age, gender, income_bucket, device_type, city, state, country FROM online_ads."user"'
)
_ONE: Final = _QUERY + " WHERE user_id = $1"


class ProfileSource(Protocol):
    """Where a request's user profile comes from: the whole table, or the one row a caller fetched."""

    def get(self, user_id: str) -> Profile | None: ...


class Profile(msgspec.Struct, frozen=True, gc=False):
    """What serving needs of one user (no name, no e-mail)."""

    age: int | None
    gender: str | None
    income_bucket: str | None
    device_type: str | None
    city: str | None
    state: str | None
    country: str | None


class ProfileTable:
    """The current user table, and how its reloads went (for ``/readyz`` and ``/metrics``)."""

    def __init__(self, users: dict[str, Profile] | None = None) -> None:
        self.users: dict[str, Profile] = users or {}
        #: Whether the first load was attempted (successfully or not): readiness waits for it.
        self.attempted = False
        self.loads = 0
        self.failures = 0
        self.loaded_at_s: float | None = None

    def __len__(self) -> int:
        return len(self.users)

    def get(self, user_id: str) -> Profile | None:
        return self.users.get(user_id)


async def fetch_profiles(dsn: str, *, timeout_s: float = 30.0) -> dict[str, Profile]:
    """Every user's profile, in one query on a short-lived connection."""
    conn = await asyncpg.connect(dsn, timeout=min(timeout_s, 10.0))
    try:
        rows = await conn.fetch(_QUERY, timeout=timeout_s)
    finally:
        await conn.close()
    return {r["user_id"]: _profile(r) for r in rows}


def _profile(r: asyncpg.Record) -> Profile:
    return Profile(
        r["age"], r["gender"], r["income_bucket"], r["device_type"], r["city"], r["state"], r["country"]
    )


async def fetch_profile(pool: asyncpg.Pool, user_id: str, *, timeout_s: float = 10.0) -> Profile | None:
    """One user's profile, or None when the user is unknown."""
    async with pool.acquire(timeout=timeout_s) as conn:
        row = await conn.fetchrow(_ONE, user_id, timeout=timeout_s)
    return None if row is None else _profile(row)
