"""Campaign budgets in Redis: the Lua scripts every process uses, so the rules live in one place.

One hash per campaign (``adplatform.names.budget_key``) holds integer micro-units: ``budget``, ``spent``,
``version`` (of the campaign state that set the budget), and the pacing fields ``slot``, ``slot_budget``,
``slot_spent``. Every change is one script, so it is atomic under any concurrency. Redis Lua numbers are
doubles: micro amounts stay far below 2^53, so they are exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from adplatform import names
from index import pacing
from index.campaign import Campaign
from index.pacing import slot_id

# KEYS[1] budget hash, KEYS[2] blocked set.
# ARGV: version, budget, slot, slot_budget, active(1/0).
# A newer campaign state sets the budget (spend is kept: an Update changes the budget, not what was spent).
# An older or equal version is ignored, so replays after a crash change nothing.
_INIT = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
local version = tonumber(ARGV[1])
if cur >= version then return 0 end
local budget = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'budget', ARGV[2], 'active', ARGV[5])
if redis.call('HEXISTS', KEYS[1], 'spent') == 0 then
  redis.call('HSET', KEYS[1], 'spent', 0)
end
local slot = redis.call('HGET', KEYS[1], 'slot')
if slot ~= ARGV[3] then
  redis.call('HSET', KEYS[1], 'slot', ARGV[3], 'slot_budget', ARGV[4], 'slot_spent', 0)
end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local slot_budget = tonumber(redis.call('HGET', KEYS[1], 'slot_budget'))
local slot_spent = tonumber(redis.call('HGET', KEYS[1], 'slot_spent'))
local cid = string.sub(KEYS[1], string.find(KEYS[1], '{') + 1, -2)
if spent >= budget or slot_spent >= slot_budget then
  redis.call('SADD', KEYS[2], cid)
else
  redis.call('SREM', KEYS[2], cid)
end
return 1
"""


class BudgetStore:
    """Budget operations on one Redis (or a Redis Cluster: each script touches one campaign's hash slot)."""

    def __init__(self, client: aioredis.Redis, *, slot_s: int) -> None:
        self._client = client
        self._slot_s = slot_s
        self._init = client.register_script(_INIT)

    async def init_campaigns(self, campaigns: Iterable[Campaign], now_s: float) -> int:
        """Set or update budgets for campaign states (newer versions only); returns how many changed."""
        slot = slot_id(now_s, self._slot_s)
        pipe = self._client.pipeline(transaction=False)
        count = 0
        for c in campaigns:
            slot_budget_micros = pacing.slot_budget(
                c.budget_micros, now_s, c.flight_start_s, c.flight_end_s, self._slot_s
            )
            args: list[Any] = [c.version, c.budget_micros, slot, slot_budget_micros, 1 if c.active else 0]
            await self._init(
                keys=[names.budget_key(c.campaign_id), names.BLOCKED_SET], args=args, client=pipe
            )
            count += 1
        if not count:
            return 0
        results = await pipe.execute()
        return sum(int(r) for r in results)

    async def get(self, campaign_id: str) -> dict[str, int]:
        raw = await self._client.hgetall(names.budget_key(campaign_id))
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
