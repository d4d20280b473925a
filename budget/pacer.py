"""The slot pacer (the original platform's Slot Budget Manager, done properly).

At each slot boundary (default 10 minutes) every campaign's slot budget becomes its remaining budget over
the remaining slots of its flight, so what a slot leaves unspent rolls into the later ones. The new slot
unblocks campaigns that had spent their previous slot budget, and every worker hears it on the budget
channel. Several pacers may run: a Redis lease per slot (``SET NX``) lets exactly one act. The debit script
rolls a campaign's slot lazily too, so a charge never uses a stale slot budget even before the pacer acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass

from adplatform import names
from adplatform.config import Config
from adplatform.metrics import PACER_BLOCKED, PACER_CAMPAIGNS, PACER_SLOTS
from adplatform.process import run_until_signalled
from adplatform.redis_client import REDIS_FAILURES, RedisClient, is_redis_failure, open_redis
from budget.budget_redis import BudgetStore
from index.pacing import Clock, SystemClock, slot_bounds, slot_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaceResult:
    slot: int
    acted: bool
    campaigns: int = 0
    blocked: int = 0


class Pacer:
    """Acts once per slot when it holds the slot's lease."""

    def __init__(self, client: RedisClient, *, slot_s: int, clock: Clock | None = None) -> None:
        self._client = client
        self._store = BudgetStore(client, slot_s=slot_s)
        self._slot_s = slot_s
        self._clock = clock or SystemClock()
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def campaign_ids(self) -> list[str]:
        """Every campaign with a budget (SCAN of every master on a cluster)."""
        ids: list[str] = []
        async for key in self._client.scan_iter(match=names.REDIS_PREFIX + "camp:*", count=1000):
            ids.append(names.campaign_id_of(key.decode() if isinstance(key, bytes) else key))
        return ids

    async def pace_slot(self) -> PaceResult:
        """Take the current slot's lease and, if ours, roll every campaign into the slot."""
        now = self._clock.now()
        slot = slot_id(now, self._slot_s)
        lease = f"{names.PACER_LEASE}:{slot}"
        if not await self._client.set(lease, self._owner, nx=True, ex=self._slot_s * 2):
            PACER_SLOTS.labels("skipped").inc()
            return PaceResult(slot, acted=False)
        ids = await self.campaign_ids()
        blocked = 0
        for start in range(0, len(ids), 1000):
            result = await self._store.pace(ids[start : start + 1000], now)
            blocked += sum(result.values())
        logger.info("slot %d: paced %d campaigns, %d blocked", slot, len(ids), blocked)
        PACER_SLOTS.labels("paced").inc()
        PACER_CAMPAIGNS.inc(len(ids))
        PACER_BLOCKED.set(blocked)
        return PaceResult(slot, acted=True, campaigns=len(ids), blocked=blocked)

    async def run(self, *, slots: int | None = None) -> list[PaceResult]:
        """Pace now, then at every slot boundary; ``slots`` bounds the number of slots (tests)."""
        results: list[PaceResult] = []
        while not self._stopping.is_set():
            try:
                results.append(await self.pace_slot())
            except Exception as exc:  # the pacer's guard: Redis failing is retried; a bug of ours is raised
                if not is_redis_failure(exc):
                    raise
                # A failure of the client itself (not a Redis error) gets its traceback.
                unexpected = not isinstance(exc, REDIS_FAILURES)
                logger.warning("pacing failed (%r); retrying in 1s", exc, exc_info=unexpected)
                await asyncio.sleep(1)
                continue
            if slots is not None and len(results) >= slots:
                break
            now = self._clock.now()
            _, end = slot_bounds(slot_id(now, self._slot_s), self._slot_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=max(end - now, 0) + 0.01)
        return results


async def run_pacer(config: Config, *, slots: int | None = None) -> int:
    """Entry point of ``adplatform pacer``: pace until SIGTERM/SIGINT (or ``slots`` slots); the number of
    slots in which this pacer held the lease and acted."""
    client = open_redis(config.redis_url, socket_timeout=10)
    pacer = Pacer(client, slot_s=config.slot_s)
    try:
        return sum(r.acted for r in await run_until_signalled(pacer.run(slots=slots), pacer.stop))
    finally:
        await client.aclose()
