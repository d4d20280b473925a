"""Campaign budgets in Redis: the Lua scripts every process uses, so the money rules live in one place.

One hash per campaign (``adplatform.names.budget_key``) holds integers: ``budget``, ``spent``,
``slot_budget`` and ``slot_spent`` in micro-units, ``version`` of the campaign state that set the budget,
``slot`` (the epoch-aligned pacing slot the slot fields belong to), and the flight in epoch seconds.
Every change is one script, so it is atomic under any concurrency. A campaign's keys share a hash tag;
the batch scripts (``_INIT``, ``_DEBIT``) take many campaigns in one call, which on Redis Cluster means
grouping a batch by hash slot first (one node here, so they are not grouped).

Redis Lua numbers are doubles: every amount here stays far below 2^53, where doubles are exact integers,
and ``math.floor(a / b)`` is exact for such integers.

Exhaustion: when a charge uses up the total or the slot budget, the script adds the campaign to the
blocked set and publishes ``block:<id>`` on ``names.CHANNEL_BUDGET`` in the same atomic step; every
ad-server worker subscribes and skips the campaign (pub/sub reaches all workers in about a millisecond;
the set is what a worker loads when it starts or reconnects, so a missed message is repaired).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from adplatform import names
from index import pacing
from index.campaign import Campaign

# Shared Lua: roll the slot lazily when the hash still holds an older slot, so a charge never uses a
# stale slot budget even if no pacer has run yet. Leftover rolls forward: the new slot budget is the
# remaining budget over the remaining slots of the flight.
_ROLL = """
local function roll(key, slot, slot_s)
  local cur = tonumber(redis.call('HGET', key, 'slot') or '-1')
  if cur == slot then return end
  local budget = tonumber(redis.call('HGET', key, 'budget'))
  local spent = tonumber(redis.call('HGET', key, 'spent') or '0')
  local fs = tonumber(redis.call('HGET', key, 'flight_start') or '0')
  local fe = tonumber(redis.call('HGET', key, 'flight_end') or '0')
  local now = slot * slot_s
  local slots = 0
  if now < fe and fe > fs then
    local first = math.floor(math.max(now, fs) / slot_s)
    local last = math.floor((fe - 1) / slot_s)
    slots = last - first + 1
  end
  local sb = 0
  if slots > 0 and budget > spent then sb = math.floor((budget - spent) / slots) end
  redis.call('HSET', key, 'slot', slot, 'slot_budget', sb, 'slot_spent', 0)
end

local function cid_of(key)
  return string.sub(key, string.find(key, '{', 1, true) + 1, -2)
end

-- Block or unblock after any change; publish only on a change of state.
local function settle(key, blocked, channel)
  local budget = tonumber(redis.call('HGET', key, 'budget'))
  local spent = tonumber(redis.call('HGET', key, 'spent'))
  local sb = tonumber(redis.call('HGET', key, 'slot_budget') or '0')
  local ss = tonumber(redis.call('HGET', key, 'slot_spent') or '0')
  local cid = cid_of(key)
  if spent >= budget or ss >= sb then
    if redis.call('SADD', blocked, cid) == 1 then redis.call('PUBLISH', channel, 'block:' .. cid) end
    return 1
  end
  if redis.call('SREM', blocked, cid) == 1 then redis.call('PUBLISH', channel, 'unblock:' .. cid) end
  return 0
end
"""

# KEYS: blocked set, then one budget hash per campaign. ARGV: slot, slot_s, channel, then 5 values per
# campaign: version, budget, flight_start, flight_end, new (1: the campaign has never been in the books,
# so it has spent nothing). A batch per call keeps the manager's per-campaign cost to a few
# microseconds. A newer campaign state sets the budget and flight; spend is kept (an Update changes the
# budget, not what was spent). An older or equal version is ignored, so a replay after a crash changes
# nothing. A missing hash is created (spent 0) only for a new campaign: any other campaign's hash is
# missing because Redis lost its data, its spend is unknown here, and a hash with spent 0 would let it
# spend its budget again; it stays missing (feedback answers 503) until reconciliation rebuilds it from
# the books. (On Redis Cluster, the caller groups a batch by hash slot.)
_INIT = (
    _ROLL
    + """
local slot = tonumber(ARGV[1])
local slot_s = tonumber(ARGV[2])
local changed = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local a = 4 + (i - 2) * 5
  local cur = tonumber(redis.call('HGET', key, 'version') or '-1')
  if cur < tonumber(ARGV[a]) and (cur >= 0 or ARGV[a + 4] == '1') then
    redis.call('HSET', key, 'version', ARGV[a], 'budget', ARGV[a + 1], 'flight_start', ARGV[a + 2],
               'flight_end', ARGV[a + 3])
    if redis.call('HEXISTS', key, 'spent') == 0 then redis.call('HSET', key, 'spent', 0) end
    -- Recompute the slot budget from the new budget and flight; what this slot spent still counts.
    local kept = 0
    if tonumber(redis.call('HGET', key, 'slot') or '-1') == slot then
      kept = tonumber(redis.call('HGET', key, 'slot_spent') or '0')
    end
    redis.call('HDEL', key, 'slot')
    roll(key, slot, slot_s)
    if kept > 0 then
      local sb = tonumber(redis.call('HGET', key, 'slot_budget')) + kept
      redis.call('HSET', key, 'slot_spent', kept, 'slot_budget', sb)
    end
    settle(key, KEYS[1], ARGV[3])
    changed = changed + 1
  end
end
return changed
"""
)

# KEYS: blocked set, then a budget hash and a dedup key per debit. ARGV: slot, slot_s, channel, dedup ttl s,
# then one amount per debit. Returns 3 integers per debit, in order: status, charged, exhausted. Status
# 0 charged, 1 duplicate (charged = the first charge), 2 unknown campaign (no budget in Redis: refuse,
# nothing charged). The debits run one after the other inside the one atomic script, so a batch of
# debits from concurrent requests (the feedback path coalesces them) costs one round trip and one AOF
# write, and each debit sees the budget the previous one left.
#
# The hot path of every feedback, so each debit is one Redis command: a campaign's hash is read once per
# call (HMGET) into a Lua table, the debits of the batch apply to that table, and each campaign touched
# is written back (one HSET) and settled (blocked or not) once at the end; nothing outside the script can
# see the states in between. The de-duplication key is claimed with ``SET NX GET``, which returns the
# first charge when the key exists. Same rules as ``roll`` and ``settle`` above, on the cached values.
# (On Redis Cluster, the caller groups a batch by hash slot, as for _INIT.)
_DEBIT = """
local slot = tonumber(ARGV[1])
local slot_s = tonumber(ARGV[2])
local channel = ARGV[3]
local ttl = ARGV[4]
local blocked = KEYS[1]
local states = {}
local touched = {}
local settled = {}
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local bkey = KEYS[2 * i]
  local dkey = KEYS[2 * i + 1]
  local st = states[bkey]
  if st == nil then
    local h = redis.call('HMGET', bkey, 'budget', 'spent', 'slot', 'slot_budget', 'slot_spent',
                         'flight_start', 'flight_end')
    if h[1] then
      st = {budget = tonumber(h[1]), spent = tonumber(h[2] or '0'), sb = tonumber(h[4] or '0'),
            ss = tonumber(h[5] or '0'), rolled = false}
      if tonumber(h[3] or '-1') ~= slot then
        -- The lazy slot roll (``roll``): remaining budget over the remaining slots of the flight.
        local fs = tonumber(h[6] or '0')
        local fe = tonumber(h[7] or '0')
        local now = slot * slot_s
        local slots = 0
        if now < fe and fe > fs then
          slots = math.floor((fe - 1) / slot_s) - math.floor(math.max(now, fs) / slot_s) + 1
        end
        st.sb = 0
        if slots > 0 and st.budget > st.spent then st.sb = math.floor((st.budget - st.spent) / slots) end
        st.ss = 0
        st.rolled = true
      end
    else
      st = false
    end
    states[bkey] = st
  end
  if not st then
    local prev = redis.call('GET', dkey)
    if prev then
      out[#out + 1] = 1; out[#out + 1] = tonumber(prev); out[#out + 1] = 0
    else
      out[#out + 1] = 2; out[#out + 1] = 0; out[#out + 1] = 0
    end
  else
    local charge = tonumber(ARGV[4 + i])
    if charge > st.budget - st.spent then charge = st.budget - st.spent end
    if charge > st.sb - st.ss then charge = st.sb - st.ss end
    if charge < 0 then charge = 0 end
    local prev = redis.call('SET', dkey, charge, 'NX', 'GET', 'EX', ttl)
    if prev then
      out[#out + 1] = 1; out[#out + 1] = tonumber(prev); out[#out + 1] = 0
    else
      if charge > 0 or st.rolled then
        st.spent = st.spent + charge
        st.ss = st.ss + charge
        if not st.dirty then st.dirty = true; touched[#touched + 1] = bkey end
      end
      local exhausted = 0
      if st.spent >= st.budget or st.ss >= st.sb then exhausted = 1 end
      if not st.settled then st.settled = true; settled[#settled + 1] = bkey end
      out[#out + 1] = 0; out[#out + 1] = charge; out[#out + 1] = exhausted
    end
  end
end
for _, bkey in ipairs(touched) do
  local st = states[bkey]
  if st.rolled then
    redis.call('HSET', bkey, 'spent', st.spent, 'slot', slot, 'slot_budget', st.sb, 'slot_spent', st.ss)
  else
    redis.call('HSET', bkey, 'spent', st.spent, 'slot_spent', st.ss)
  end
end
for _, bkey in ipairs(settled) do
  local st = states[bkey]
  local cid = string.sub(bkey, string.find(bkey, '{', 1, true) + 1, -2)
  if st.spent >= st.budget or st.ss >= st.sb then
    if redis.call('SADD', blocked, cid) == 1 then redis.call('PUBLISH', channel, 'block:' .. cid) end
  elseif redis.call('SREM', blocked, cid) == 1 then
    redis.call('PUBLISH', channel, 'unblock:' .. cid)
  end
end
return out
"""

# KEYS: budget hash, dedup key, blocked set. ARGV: charged, slot, channel.
# Undo a debit whose event Kafka did not acknowledge: the client gets a 503 and may retry.
_REFUND = (
    _ROLL
    + """
local prev = redis.call('GET', KEYS[2])
if not prev or tonumber(prev) ~= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[2])
local charged = tonumber(ARGV[1])
if charged > 0 and redis.call('HEXISTS', KEYS[1], 'budget') == 1 then
  redis.call('HINCRBY', KEYS[1], 'spent', -charged)
  if tonumber(redis.call('HGET', KEYS[1], 'slot') or '-1') == tonumber(ARGV[2]) then
    redis.call('HINCRBY', KEYS[1], 'slot_spent', -charged)
  end
  settle(KEYS[1], KEYS[3], ARGV[3])
end
return 1
"""
)

# KEYS: budget hash, blocked set. ARGV: slot, slot_s, channel. The pacer's per-slot step.
_PACE = (
    _ROLL
    + """
if redis.call('HEXISTS', KEYS[1], 'budget') == 0 then return -1 end
roll(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
return settle(KEYS[1], KEYS[2], ARGV[3])
"""
)

# KEYS: budget hash, blocked set. ARGV: expected spent ('' = the hash must be absent), new spent,
# version, budget, flight_start, flight_end, slot, slot_s, channel.
# Reconciliation's compare-and-set: repairs only if nothing charged since the spend was read.
_REPAIR = (
    _ROLL
    + """
local cur = redis.call('HGET', KEYS[1], 'spent')
if ARGV[1] == '' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
  redis.call('HSET', KEYS[1], 'version', ARGV[3], 'budget', ARGV[4], 'flight_start', ARGV[5],
             'flight_end', ARGV[6], 'spent', ARGV[2])
elseif cur ~= ARGV[1] then
  return 0
else
  local delta = tonumber(ARGV[2]) - tonumber(cur)
  redis.call('HSET', KEYS[1], 'spent', ARGV[2])
  if redis.call('HEXISTS', KEYS[1], 'slot_spent') == 1 then
    local ss = tonumber(redis.call('HGET', KEYS[1], 'slot_spent')) + delta
    if ss < 0 then ss = 0 end
    redis.call('HSET', KEYS[1], 'slot_spent', ss)
  end
end
roll(KEYS[1], tonumber(ARGV[7]), tonumber(ARGV[8]))
settle(KEYS[1], KEYS[2], ARGV[9])
return 1
"""
)


#: Beyond any token's life: a (request, action) can never be charged twice while its token is valid.
DEDUP_MARGIN_S = 3600


def dedup_ttl_s(token_ttl_s: int) -> int:
    """How long a charge's de-duplication key lives, for tokens that live ``token_ttl_s``."""
    return token_ttl_s + DEDUP_MARGIN_S


@dataclass(frozen=True, slots=True)
class DedupEntry:
    """A booked charge whose de-duplication key a rebuild restores (``expires_ms``: epoch ms)."""

    campaign_id: str
    dedup_id: str
    charged_micros: int
    expires_ms: int


class BudgetStatus:
    CHARGED = 0
    DUPLICATE = 1
    UNKNOWN = 2


@dataclass(frozen=True, slots=True)
class DebitRequest:
    campaign_id: str
    #: De-duplication id: the same id is charged once (the feedback path uses request digest + action).
    dedup_id: str
    amount_micros: int


@dataclass(frozen=True)
class Debit:
    status: int
    charged_micros: int
    exhausted: bool
    slot: int


class BudgetStore:
    """Budget operations on one Redis (or a Redis Cluster: each script touches one campaign's hash slot)."""

    def __init__(self, client: aioredis.Redis, *, slot_s: int) -> None:
        self._client = client
        self._slot_s = slot_s
        self._init = client.register_script(_INIT)
        self._debit = client.register_script(_DEBIT)
        self._refund = client.register_script(_REFUND)
        self._pace = client.register_script(_PACE)
        self._repair = client.register_script(_REPAIR)

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    async def init_campaigns(
        self, campaigns: Iterable[Campaign], now_s: float, *, new: Collection[str], chunk: int = 500
    ) -> int:
        """Set or update budgets for campaign states (newer versions only); returns how many changed.

        ``new``: the campaigns that have never been in the books (so have spent nothing); only their
        missing budgets are created. Another campaign's missing budget waits for reconciliation."""
        slot = pacing.slot_id(now_s, self._slot_s)
        batch = list(campaigns)
        changed = 0
        for start in range(0, len(batch), chunk):
            part = batch[start : start + chunk]
            keys = [names.BLOCKED_SET, *(names.budget_key(c.campaign_id) for c in part)]
            args: list[Any] = [slot, self._slot_s, names.CHANNEL_BUDGET]
            for c in part:
                fresh = int(c.campaign_id in new)
                args += (c.version, c.budget_micros, c.flight_start_s, c.flight_end_s, fresh)
            changed += int(await self._init(keys=keys, args=args))
        return changed

    async def debit(
        self, campaign_id: str, dedup_id: str, amount_micros: int, *, now_s: float, dedup_ttl_s: int
    ) -> Debit:
        """Charge at most ``amount_micros`` once per ``dedup_id``, capped by total and slot budget."""
        (debit,) = await self.debit_many([DebitRequest(campaign_id, dedup_id, amount_micros)],
                                         now_s=now_s, dedup_ttl_s=dedup_ttl_s)  # fmt: skip
        return debit

    async def debit_many(
        self, requests: Sequence[DebitRequest], *, now_s: float, dedup_ttl_s: int
    ) -> list[Debit]:
        """``debit`` for each request, in order, in one atomic script call (one round trip)."""
        slot = pacing.slot_id(now_s, self._slot_s)
        keys = [names.BLOCKED_SET]
        args: list[Any] = [slot, self._slot_s, names.CHANNEL_BUDGET, dedup_ttl_s]
        for r in requests:
            keys += (names.budget_key(r.campaign_id), names.dedup_key(r.campaign_id, r.dedup_id))
            args.append(r.amount_micros)
        flat = await self._debit(keys=keys, args=args)
        return [
            Debit(int(flat[i]), int(flat[i + 1]), bool(int(flat[i + 2])), slot)
            for i in range(0, len(flat), 3)
        ]

    async def restore_dedup(self, entries: Iterable[DedupEntry], now_s: float, *, chunk: int = 1000) -> int:
        """Put back the de-duplication keys of booked charges (after Redis lost its data), each with the
        charge as its value and its original expiry; a key that exists is left alone. Returns how many
        were restored. Call before the campaign's budget is rebuilt: until then its debits are refused."""
        now_ms = int(now_s * 1000)
        live = [e for e in entries if e.expires_ms > now_ms]
        restored = 0
        for start in range(0, len(live), chunk):
            pipe = self._client.pipeline(transaction=False)
            for e in live[start : start + chunk]:
                key = names.dedup_key(e.campaign_id, e.dedup_id)
                pipe.set(key, e.charged_micros, nx=True, pxat=e.expires_ms)
            restored += sum(1 for ok in await pipe.execute() if ok)
        return restored

    async def refund(self, campaign_id: str, dedup_id: str, debit: Debit) -> bool:
        """Undo ``debit`` (its event was not acknowledged); idempotent."""
        keys = [names.budget_key(campaign_id), names.dedup_key(campaign_id, dedup_id), names.BLOCKED_SET]
        args: list[Any] = [debit.charged_micros, debit.slot, names.CHANNEL_BUDGET]
        return bool(int(await self._refund(keys=keys, args=args)))

    async def pace(self, campaign_ids: Iterable[str], now_s: float) -> dict[str, bool]:
        """Roll every campaign to the current slot; returns campaign id → blocked after the roll."""
        slot = pacing.slot_id(now_s, self._slot_s)
        ids = list(campaign_ids)
        pipe = self._client.pipeline(transaction=False)
        for cid in ids:
            args: list[Any] = [slot, self._slot_s, names.CHANNEL_BUDGET]
            await self._pace(keys=[names.budget_key(cid), names.BLOCKED_SET], args=args, client=pipe)
        results = await pipe.execute() if ids else []
        return {cid: int(r) == 1 for cid, r in zip(ids, results, strict=True) if int(r) >= 0}

    async def repair(
        self, campaign: Campaign, *, expected_spent: int | None, spent: int, now_s: float
    ) -> bool:
        """Set a campaign's spend to ``spent`` if Redis still holds ``expected_spent`` (None = no hash)."""
        slot = pacing.slot_id(now_s, self._slot_s)
        args: list[Any] = [
            "" if expected_spent is None else expected_spent, spent, campaign.version, campaign.budget_micros,
            campaign.flight_start_s, campaign.flight_end_s, slot, self._slot_s, names.CHANNEL_BUDGET,
        ]  # fmt: skip
        keys = [names.budget_key(campaign.campaign_id), names.BLOCKED_SET]
        return bool(int(await self._repair(keys=keys, args=args)))

    async def get(self, campaign_id: str) -> dict[str, int]:
        raw = await self._client.hgetall(names.budget_key(campaign_id))
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}

    async def spent_all(self) -> dict[str, int]:
        """Every campaign's spend in Redis (SCAN; for reconciliation and tests, not the hot path)."""
        out: dict[str, int] = {}
        pattern = names.REDIS_PREFIX + "camp:*"
        keys = [k async for k in self._client.scan_iter(match=pattern, count=1000)]
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "spent")
        for key, value in zip(keys, await pipe.execute(), strict=True):
            text = key.decode() if isinstance(key, bytes) else key
            if value is not None:
                out[text[text.index("{") + 1 : -1]] = int(value)
        return out
