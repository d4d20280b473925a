"""User profiles in memory: ``online_ads."user"`` loaded at start and reloaded in the background.

Serving never waits on the database: a request reads the current table (a dict swapped whole on each
reload). Degradation policy: the database down at start means an empty table (every user is served as an
unknown user, from the query's values only) until a reload succeeds; down later means the last table stays.
The table and its query live in ``adplatform.profiles`` (the admin service reads profiles too).
"""

from __future__ import annotations

import asyncio
import logging
import time

from adplatform.errors import is_retriable
from adplatform.profiles import Profile, ProfileTable, fetch_profiles

__all__ = ["Profile", "ProfileLoader", "ProfileTable", "fetch_profiles"]

logger = logging.getLogger(__name__)


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
