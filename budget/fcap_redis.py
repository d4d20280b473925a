"""Frequency caps in Redis: one script call per request decides which capped candidate a user may see.

Per (user, capped campaign), a sorted set (``names.fcap_key``) holds the times, in Redis's own
microseconds, of the ads served to the user within the window: the window slides, and one Redis clock
serves every worker and host, so no clock skew between ad servers can let a cap slip. The ``PICK`` script
gets a request's capped candidates in auction order and, atomically, takes the first one under its cap:
it records the ad (the count is taken when the ad is served) and returns its position. All the keys of a
call share the user's hash tag, so on Redis Cluster the call is single-slot.

Each set holds at most ``count`` members (``index.fcap.MAX_COUNT``) and expires when its newest ad leaves
the window (a flight-long cap: when the flight ends), so an idle user costs nothing.

``max_in_flight`` bounds the calls in flight; a call beyond it waits for a free place (within the caller's
deadline) instead of failing. A bounded pool on one node waits by itself, a Redis Cluster client's node
pools do not: past ``max_connections`` a call fails at once (``MaxConnectionsError``), so a burst of capped
requests on one worker would fail like a Redis outage (a user's calls all go to one master), and the cap
gate would then skip every capped campaign, for every user, for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Final, NamedTuple

from adplatform import names
from adplatform.redis_client import RedisClient
from index.campaign import Campaign

#: KEYS: one cap key per candidate, in auction order. ARGV: per candidate ``count, window_ms, ttl_ms``.
#: Returns ``{position, wait_us...}``: the 1-based position of the candidate taken (0 when every one is at
#: its cap), then, for each candidate passed over at its cap, the microseconds until its oldest ad leaves
#: the window (when the user may see it again), so the caller can skip it until then without asking.
#: Members are ``<now_us>-<count before>``: unique, since two calls in one microsecond see different counts.
#: Redis 7 replicates a script's effects, so reading TIME before writing is allowed.
PICK: Final = """
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {0}
for i, key in ipairs(KEYS) do
  local count = tonumber(ARGV[3 * i - 2])
  local window_us = tonumber(ARGV[3 * i - 1]) * 1000
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_us - window_us)
  local seen = redis.call('ZCARD', key)
  if seen < count then
    redis.call('ZADD', key, now_us, now_us .. '-' .. seen)
    redis.call('PEXPIRE', key, ARGV[3 * i])
    out[1] = i
    return out
  end
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  out[#out + 1] = math.max(0, tonumber(oldest[2]) + window_us - now_us)
end
return out
"""


class Pick(NamedTuple):
    """A ``PICK`` answer: the 0-based position taken (-1: none), and for each candidate passed over at its
    cap (the first ones, in order), the seconds until the user may see it again."""

    taken: int
    at_cap_for_s: list[float]


class FrequencyCapStore:
    """Runs ``PICK`` for one request's capped candidates (a Redis Cluster client routes it by the user's
    hash tag)."""

    def __init__(self, client: RedisClient, *, max_in_flight: int | None = None) -> None:
        self._client = client
        self._pick = client.register_script(PICK)
        #: At most ``max_in_flight`` calls at once, each holding one connection of one node (None: no bound).
        self._in_flight = asyncio.Semaphore(max_in_flight) if max_in_flight else None

    @property
    def client(self) -> RedisClient:
        return self._client

    async def pick(self, user_id: str, capped: Sequence[Campaign], now_s: float) -> int:
        """Take the first candidate of ``capped`` (all capped, in auction order) that ``user_id`` has seen
        fewer times than its cap within its window, and count this ad; its 0-based position, or -1."""
        return (await self.pick_at_cap(user_id, capped, now_s)).taken

    async def pick_at_cap(self, user_id: str, capped: Sequence[Campaign], now_s: float) -> Pick:
        """``pick``, also saying how long each candidate passed over stays at its cap for the user."""
        keys: list[str] = []
        args: list[int] = []
        for c in capped:
            cap = c.frequency_cap
            assert cap is not None, "only capped candidates are checked"
            keys.append(names.fcap_key(user_id, c.campaign_id))
            args += (cap.count, cap.window_ms(c), cap.ttl_ms(c, now_s))
        if not keys:
            return Pick(-1, [])
        async with self._in_flight or contextlib.nullcontext():
            reply = await self._pick(keys=keys, args=args)
        return Pick(int(reply[0]) - 1, [int(w) / 1e6 for w in reply[1:]])

    async def seen(self, user_id: str, campaign: Campaign) -> int:
        """How many ads of ``campaign`` the store holds for ``user_id`` (expired ones not yet trimmed
        included); for tests and tools."""
        return int(await self._client.zcard(names.fcap_key(user_id, campaign.campaign_id)))
