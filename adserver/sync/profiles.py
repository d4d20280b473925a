"""User profiles in memory: ``online_ads."user"`` loaded at start and reloaded in the background.

Serving never waits on the database: a request reads the current table (a dict swapped whole on each
reload). Degradation policy: the database down at start means an empty table (every user is served as an
unknown user, from the query's values only) until a reload succeeds; down later means the last table stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

import asyncpg
import msgspec

from adplatform.errors import is_retriable

logger = logging.getLogger(__name__)

_QUERY: Final = (
    'SELECT user_id, age, gender, income_bucket, device_type, city, state, country FROM online_ads."user"'
)


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
    return {
        r["user_id"]: Profile(
            r["age"], r["gender"], r["income_bucket"], r["device_type"], r["city"], r["state"], r["country"]
        )
        for r in rows
    }


class ProfileLoader:
    """Reloads a ``ProfileTable`` every ``interval_s`` until cancelled."""

    def __init__(self, dsn: str, table: ProfileTable, *, interval_s: float = 60.0) -> None:
        self._dsn = dsn
        self._table = table
        self._interval_s = interval_s
        self._failing = False

    async def load_once(self) -> bool:
        """One reload; returns whether it succeeded (a failure keeps the previous table)."""
        table = self._table
        try:
            users = await fetch_profiles(self._dsn)
        except Exception as exc:
            if not is_retriable(exc):  # a missing table or refused login never clears by waiting
                raise
            table.failures += 1
            if not self._failing:  # one line per outage, not one per retry
                logger.warning("user profiles not loaded (%s); keeping %d profiles", exc, len(table))
            self._failing = True
            return False
        finally:
            table.attempted = True
        table.users = users
        table.loads += 1
        table.loaded_at_s = time.time()
        if self._failing:
            logger.info("user profiles loaded again: %d profiles", len(users))
        self._failing = False
        return True

    async def run(self) -> None:
        while True:
            await self.load_once()
            await asyncio.sleep(self._interval_s)
