"""The budget Lua scripts: each defined once here, all built from one snippet of the money rules.

One hash per campaign (``adplatform.names.budget_key``) holds integers: ``budget``, ``spent``,
``slot_budget`` and ``slot_spent`` in micro-units, ``version`` of the campaign state that set the budget,
``slot`` (the epoch-aligned pacing slot the slot fields belong to), and the flight in epoch seconds.
Every change is one script, so it is atomic under any concurrency. A campaign's keys share a hash tag;
the batch scripts (``INIT``, ``DEBIT``) take many campaigns in one call: on Redis Cluster the caller
groups a batch by hash slot, so every call touches one slot (``budget.slot_call``).

``RULES`` is the one place the scripts' money rules are written: a campaign's hash is read into a Lua
table once (``load``), the slot roll (``roll``: the slot-budget rule of ``index.pacing.slot_budget``,
evaluated at the slot's start) and the block/unblock decision (``settle``) work on that table, and the
scripts write back only what changed. ``tests/budget/test_slot_rule.py`` runs the roll and the Python rule
on the same random inputs.

Redis Lua numbers are doubles: every amount here stays far below 2^53, where doubles are exact integers,
and ``math.floor(a / b)`` is exact for such integers. Lua numbers handed to ``redis.call`` are written
with 17 significant digits, so such integers are stored exactly, without an exponent.

Exhaustion: when a charge uses up the total or the slot budget, the script adds the campaign to the
blocked set and publishes ``block:<id>`` on the budget channel in the same atomic step; every ad-server
worker subscribes and skips the campaign (pub/sub reaches all workers in about a millisecond; the set is
what a worker loads when it starts or reconnects, so a missed message is repaired). The caller names the
set, the channel and the publish command (``adplatform.redis_client.RedisLayout``): on one node the one
set and ``PUBLISH``; on Redis Cluster the set and shard channel of the campaign's slot and ``SPUBLISH``.
"""

from __future__ import annotations

from typing import Final

# Every script starts with these local functions (a script defines them per call; that costs well under a
# microsecond, and keeps each script self-contained for EVALSHA and for Redis Cluster).
RULES: Final = """
-- The campaign id of a budget key: its hash tag (``adplatform.names.campaign_id_of``).
local function cid_of(key)
  return string.sub(key, string.find(key, '{', 1, true) + 1, -2)
end

-- A campaign's hash as a table (one HMGET), or false when it has no budget.
local function load(key)
  local h = redis.call('HMGET', key, 'budget', 'spent', 'slot', 'slot_budget', 'slot_spent',
                       'flight_start', 'flight_end')
  if not h[1] then return false end
  return {budget = tonumber(h[1]), spent = tonumber(h[2] or '0'), slot = tonumber(h[3] or '-1'),
          sb = tonumber(h[4] or '0'), ss = tonumber(h[5] or '0'), fs = tonumber(h[6] or '0'),
          fe = tonumber(h[7] or '0')}
end

-- The slot budget rule (``index.pacing.slot_budget`` at the slot's start): the remaining budget over the
-- remaining epoch-aligned slots of the flight, rounded down; 0 once the flight is over or nothing remains.
local function slot_budget(st, slot, slot_s)
  local now = slot * slot_s
  local slots = 0
  if now < st.fe and st.fe > st.fs then
    slots = math.floor((st.fe - 1) / slot_s) - math.floor(math.max(now, st.fs) / slot_s) + 1
  end
  if slots > 0 and st.budget > st.spent then return math.floor((st.budget - st.spent) / slots) end
  return 0
end

-- Roll the table to ``slot`` when it still holds an older one (lazily, so a charge never uses a stale
-- slot budget even if no pacer has run yet); leftover rolls forward. True when it rolled.
local function roll(st, slot, slot_s)
  if st.slot == slot then return false end
  st.sb = slot_budget(st, slot, slot_s)
  st.ss = 0
  st.slot = slot
  return true
end

local function save_slot(key, st)
  redis.call('HSET', key, 'slot', st.slot, 'slot_budget', st.sb, 'slot_spent', st.ss)
end

local function exhausted(st)
  return st.spent >= st.budget or st.ss >= st.sb
end

-- Block or unblock after any change; publish (``pub``: PUBLISH or SPUBLISH) only on a change of state.
-- Returns 1 when blocked.
local function settle(key, st, blocked, channel, pub)
  local cid = cid_of(key)
  if exhausted(st) then
    if redis.call('SADD', blocked, cid) == 1 then redis.call(pub, channel, 'block:' .. cid) end
    return 1
  end
  if redis.call('SREM', blocked, cid) == 1 then redis.call(pub, channel, 'unblock:' .. cid) end
  return 0
end
"""

# KEYS: blocked set, then one budget hash per campaign. ARGV: slot, slot_s, channel, publish command, then 5
# values per
# campaign: version, budget, flight_start, flight_end, new (1: the campaign has never been in the books,
# so it has spent nothing). A batch per call keeps the manager's per-campaign cost to a few
# microseconds. A newer campaign state sets the budget and flight; spend is kept (an Update changes the
# budget, not what was spent). An older or equal version is ignored, so a replay after a crash changes
# nothing. A missing hash is created (spent 0) only for a new campaign: any other campaign's hash is
# missing because Redis lost its data, its spend is unknown here, and a hash with spent 0 would let it
# spend its budget again; it stays missing (feedback answers 503) until reconciliation rebuilds it from
# the books. (On Redis Cluster, the caller groups a batch by hash slot: the blocked set and channel are
# the slot's.)
INIT: Final = (
    RULES
    + """
local slot = tonumber(ARGV[1])
local slot_s = tonumber(ARGV[2])
local changed = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local a = 5 + (i - 2) * 5
  local cur = tonumber(redis.call('HGET', key, 'version') or '-1')
  if cur < tonumber(ARGV[a]) and (cur >= 0 or ARGV[a + 4] == '1') then
    redis.call('HSET', key, 'version', ARGV[a], 'budget', ARGV[a + 1], 'flight_start', ARGV[a + 2],
               'flight_end', ARGV[a + 3])
    if redis.call('HEXISTS', key, 'spent') == 0 then redis.call('HSET', key, 'spent', 0) end
    -- Recompute the slot budget from the new budget and flight; what this slot spent still counts.
    local st = load(key)
    local kept = 0
    if st.slot == slot and st.ss > 0 then kept = st.ss end
    st.sb = slot_budget(st, slot, slot_s) + kept
    st.ss = kept
    st.slot = slot
    save_slot(key, st)
    settle(key, st, KEYS[1], ARGV[3], ARGV[4])
    changed = changed + 1
  end
end
return changed
"""
)

# KEYS: blocked set, then a budget hash and a dedup key per debit. ARGV: slot, slot_s, channel, dedup ttl s,
# publish command, then one amount per debit. Returns 3 integers per debit, in order: status, charged,
# exhausted. Status 0 charged, 1 duplicate (charged = the first charge), 2 unknown campaign (no budget
# in Redis: refuse, nothing charged). The debits run one after the other inside the one atomic script,
# so a batch of debits from concurrent requests (the feedback path coalesces them) costs one round trip
# and one AOF write, and each debit sees the budget the previous one left.
#
# The hot path of every feedback, so each debit is one Redis command: a campaign's hash is read once per
# call (``load``), the debits of the batch apply to that table, and each campaign touched is written back
# (one HSET) and settled (blocked or not) once at the end, in the order the batch met them; nothing outside
# the script can see the states in between. The de-duplication key is claimed with ``SET NX GET``, which
# returns the first charge when the key exists. (On Redis Cluster, the caller groups a batch by hash
# slot, as for INIT.)
DEBIT: Final = (
    RULES
    + """
local slot = tonumber(ARGV[1])
local slot_s = tonumber(ARGV[2])
local channel = ARGV[3]
local ttl = ARGV[4]
local pub = ARGV[5]
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
    st = load(bkey)
    if st then st.rolled = roll(st, slot, slot_s) end
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
    local charge = tonumber(ARGV[5 + i])
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
      local ex = 0
      if exhausted(st) then ex = 1 end
      if not st.settled then st.settled = true; settled[#settled + 1] = bkey end
      out[#out + 1] = 0; out[#out + 1] = charge; out[#out + 1] = ex
    end
  end
end
for _, bkey in ipairs(touched) do
  local st = states[bkey]
  if st.rolled then
    redis.call('HSET', bkey, 'spent', st.spent, 'slot', st.slot, 'slot_budget', st.sb, 'slot_spent', st.ss)
  else
    redis.call('HSET', bkey, 'spent', st.spent, 'slot_spent', st.ss)
  end
end
for _, bkey in ipairs(settled) do
  settle(bkey, states[bkey], blocked, channel, pub)
end
return out
"""
)

# KEYS: budget hash, dedup key, blocked set. ARGV: charged, slot, channel, publish command.
# Undo a debit whose event Kafka did not acknowledge: the client gets a 503 and may retry. HINCRBY keeps
# the undo exact in Redis's own integers.
REFUND: Final = (
    RULES
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
  settle(KEYS[1], load(KEYS[1]), KEYS[3], ARGV[3], ARGV[4])
end
return 1
"""
)

# KEYS: budget hash, blocked set. ARGV: slot, slot_s, channel, publish command. The pacer's per-slot step:
# -1 when the campaign has no budget, else 1 when it is blocked after the roll.
PACE: Final = (
    RULES
    + """
local st = load(KEYS[1])
if not st then return -1 end
if roll(st, tonumber(ARGV[1]), tonumber(ARGV[2])) then save_slot(KEYS[1], st) end
return settle(KEYS[1], st, KEYS[2], ARGV[3], ARGV[4])
"""
)

# KEYS: budget hash, blocked set. ARGV: expected spent ('' = the hash must be absent), new spent,
# version, budget, flight_start, flight_end, slot, slot_s, channel, publish command.
# Reconciliation's compare-and-set: repairs only if nothing charged since the spend was read.
REPAIR: Final = (
    RULES
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
local st = load(KEYS[1])
if roll(st, tonumber(ARGV[7]), tonumber(ARGV[8])) then save_slot(KEYS[1], st) end
settle(KEYS[1], st, KEYS[2], ARGV[9], ARGV[10])
return 1
"""
)
