"""User profiles in memory: ``online_ads."user"`` loaded at start and reloaded in the background.

Serving never waits on the database: a request reads the current table (swapped whole on each reload).
Every ``interval_s`` the loader reads the table's stamp and reloads only when it changed, and every
``full_reload_s`` whatever the stamp says (a restore that bypassed the table's trigger); a reload is read in
chunks, each a turn of the event loop (``adplatform.profiles``). Degradation policy: the database down at
start means an empty table (every user is served as an unknown user, from the query's values only) until a
load succeeds; down later means the last table stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from adplatform.errors import is_retriable
from adplatform.profiles import Profile, ProfileTable, fetch_profiles

__all__ = ["Profile", "ProfileLoader", "ProfileTable", "fetch_profiles"]

logger = logging.getLogger(__name__)

#: Seconds between two reloads made whatever the table's stamp says.
FULL_RELOAD_S: Final = 600.0


class ProfileLoader:
    """Keeps a ``ProfileTable`` current, checking every ``interval_s`` until cancelled."""

    def __init__(
        self, dsn: str, table: ProfileTable, *, interval_s: float = 60.0, full_reload_s: float = FULL_RELOAD_S
    ) -> None:
        self._dsn = dsn
        self._table = table
        self._interval_s = interval_s
        self._full_reload_s = full_reload_s
        self._full_at: float | None = None  # monotonic time of the last reload made whatever the stamp
        self._failing = False

    async def load_once(self) -> bool:
        """One check, reloading when the table changed; returns whether it succeeded (a failure keeps the
        previous table)."""
        table = self._table
        now = time.monotonic()
        full = self._full_at is None or now - self._full_at >= self._full_reload_s
        try:
            snapshot = await fetch_profiles(self._dsn, unless_version=None if full else table.version)
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
        if snapshot.shards is not None:
            table.replace(snapshot.version, snapshot.shards)
            if full:
                self._full_at = now
        table.loads += 1
        table.loaded_at_s = time.time()
        if self._failing:
            logger.info("user profiles loaded again: %d profiles", len(table))
        self._failing = False
        return True

    async def run(self) -> None:
        while True:
            await self.load_once()
            await asyncio.sleep(self._interval_s)
