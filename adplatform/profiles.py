"""User profiles (``online_ads."user"``): what a request needs of a user, the in-memory table, and the
queries that fill it (every user for the ad server, one user for the admin service's explain).

A reload never holds a serving worker's event loop for long, however many users there are:
- it reads the table through a cursor, ``CHUNK_ROWS`` rows per fetch, each fetch a turn of the loop;
- the table is ``SHARDS`` dicts by the user id's hash, so no dict of every user is ever resized at once
  (at 1,000,000 users one dict's last resize alone holds the loop ~33 ms, a shard's well under 1 ms);
- it is skipped when the table has not changed: every statement that writes ``online_ads."user"`` stamps
  its transaction's id into ``online_ads.table_versions`` (migration 0007, in the writer's transaction), and
  the reload reads that stamp and the rows in one snapshot. A transaction id never repeats, so an unchanged
  stamp means unchanged rows, a reset or restore included.
Repeated values (gender, device, city, …) are shared between profiles: a third of the memory at 1,000,000
users.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple, Protocol

import asyncpg
import msgspec

_QUERY: Final = (
    'SELECT user_id, age, gender, income_bucket, device_type, city, state, country FROM online_ads."user"'
)
_ONE: Final = _QUERY + " WHERE user_id = $1"
_VERSION: Final = "SELECT version FROM online_ads.table_versions WHERE name = 'user'"

#: Rows per fetch of a reload: about 2 ms of building between two turns of the event loop.
CHUNK_ROWS: Final = 1000
#: Dicts the table is split into (a power of two: a user's is ``hash(user_id) & (SHARDS - 1)``).
SHARDS: Final = 64
_MASK: Final = SHARDS - 1


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


Shards = list[dict[str, Profile]]


def empty_shards() -> Shards:
    return [{} for _ in range(SHARDS)]


class ProfileTable:
    """The current user table, and how its reloads went (for ``/readyz`` and ``/metrics``)."""

    def __init__(self, users: Mapping[str, Profile] | None = None) -> None:
        shards = empty_shards()
        for user_id, profile in (users or {}).items():
            shards[hash(user_id) & _MASK][user_id] = profile
        self._shards = shards
        self._size = sum(map(len, shards))
        #: The ``online_ads.table_versions`` stamp the table was read at (None: not read from the database).
        self.version: int | None = None
        #: Whether the first load was attempted (successfully or not): readiness waits for it.
        self.attempted = False
        #: Successful checks (a reload, or the stamp found unchanged), tables rebuilt, failed attempts.
        self.loads = 0
        self.reloads = 0
        self.failures = 0
        self.loaded_at_s: float | None = None

    def __len__(self) -> int:
        return self._size

    def get(self, user_id: str) -> Profile | None:
        return self._shards[hash(user_id) & _MASK].get(user_id)

    def replace(self, version: int | None, shards: Shards) -> None:
        """Swap in a reloaded table, read at stamp ``version``."""
        self._shards = shards
        self._size = sum(map(len, shards))
        self.version = version
        self.reloads += 1


class Snapshot(NamedTuple):
    """One read of the table: its stamp, and its rows unless they were not read (the stamp unchanged)."""

    version: int | None
    shards: Shards | None


def add_rows(shards: Shards, rows: Iterable[asyncpg.Record], seen: dict[str | None, str | None]) -> None:
    """Add ``_QUERY``'s rows to ``shards``, sharing each repeated value through ``seen``."""
    share = seen.setdefault
    for user_id, age, gender, income, device, city, state, country in rows:
        shards[hash(user_id) & _MASK][user_id] = Profile(
            age, share(gender, gender), share(income, income), share(device, device),
            share(city, city), share(state, state), share(country, country),
        )  # fmt: skip


async def fetch_profiles(
    dsn: str, *, unless_version: int | None = None, timeout_s: float = 30.0, chunk_rows: int = CHUNK_ROWS
) -> Snapshot:
    """Every user's profile, on a short-lived connection, ``chunk_rows`` rows per fetch; no rows (``shards``
    None) when the table's stamp is still ``unless_version``. ``timeout_s`` bounds each round trip."""
    conn = await asyncpg.connect(dsn, timeout=min(timeout_s, 10.0))
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):  # the stamp of these rows
            version = await conn.fetchval(_VERSION, timeout=timeout_s)
            if version is not None and version == unless_version:
                return Snapshot(version, None)
            shards = empty_shards()
            seen: dict[str | None, str | None] = {}
            cursor = await conn.cursor(_QUERY, timeout=timeout_s)
            while rows := await cursor.fetch(chunk_rows, timeout=timeout_s):
                add_rows(shards, rows, seen)
    finally:
        await conn.close()
    return Snapshot(version, shards)


def _profile(r: asyncpg.Record) -> Profile:
    return Profile(
        r["age"], r["gender"], r["income_bucket"], r["device_type"], r["city"], r["state"], r["country"]
    )


async def fetch_profile(pool: asyncpg.Pool, user_id: str, *, timeout_s: float = 10.0) -> Profile | None:
    """One user's profile, or None when the user is unknown."""
    async with pool.acquire(timeout=timeout_s) as conn:
        row = await conn.fetchrow(_ONE, user_id, timeout=timeout_s)
    return None if row is None else _profile(row)
