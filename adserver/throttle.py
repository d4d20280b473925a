"""Even pacing on the serve path: each worker serves an even-paced campaign with a probability.

The probability of each even campaign this worker has seen at the top of an auction is updated every tick
(``TICK_S``) from the campaign's live budget hash in Redis (which the debit script keeps), by
``index.throttle.next_state``: one pipelined ``HMGET`` per tick for the watched campaigns, nothing
per request. Workers do not talk to each other: they read the same spend and apply the same rule.

A campaign's state (its probability and its rate estimate) carries over from one slot to the next
(traffic changes little in ten minutes), so a slot does not open with a burst at probability 1. Until a
debit rolls the hash to the new slot, the worker computes the new slot's budget itself with the scripts'
rule (``index.pacing.slot_budget`` at the slot's start) and counts its spend as 0. A campaign never seen
serves at probability 1 until the next tick. If Redis cannot be read, the probabilities stay as they are.
On a Redis Cluster the hashes of different campaigns live on different masters: a tick reads each master's
share in one pipeline of its own, all masters at once, through per-master clients
(``budget.slot_call.NodeClients``, not redis-py's cluster pipeline, which breaks when used concurrently
against several nodes); a master that fails leaves only its campaigns' probabilities as they are.
``asap`` campaigns are never throttled, and the hard cap (never more than the budget, nor the slot budget)
stays in the debit script.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from adplatform import names
from adplatform.redis_client import ClientFailureLog, RedisClient, hmget_many, is_redis_failure
from budget.slot_call import NodeClients
from index.pacing import Clock, SystemClock, slot_bounds, slot_budget, slot_id
from index.throttle import ThrottleState, next_state

logger = logging.getLogger(__name__)

#: Seconds between two updates of the probabilities.
TICK_S: Final = 1.0
#: Campaigns watched per worker at most (the even campaigns most recently at the top of an auction).
MAX_WATCHED: Final = 10_000
#: Campaigns a tick updates between two turns of the event loop (~1 ms of a worker), so a tick of many
#: watched campaigns never holds the requests waiting on it for longer.
UPDATES_PER_TURN: Final = 100
#: The budget hash's fields a tick reads (``budget.script``), in ``SlotState`` order.
FIELDS: Final = ("slot", "slot_budget", "slot_spent", "budget", "spent", "flight_start", "flight_end")


def _int(value: bytes | None) -> int:
    return 0 if value is None else int(value)


class SlotState(NamedTuple):
    """A campaign's budget hash as a tick reads it, micros and epoch seconds (``slot`` -1: no state)."""

    slot: int
    slot_budget: int
    slot_spent: int
    budget: int
    spent: int
    flight_start_s: int
    flight_end_s: int

    @classmethod
    def parse(cls, reply: list[bytes | None]) -> SlotState:
        slot, slot_budget, slot_spent, budget, spent, flight_start, flight_end = reply  # FIELDS' order
        return cls(
            -1 if slot is None else int(slot),
            _int(slot_budget),
            _int(slot_spent),
            _int(budget),
            _int(spent),
            _int(flight_start),
            _int(flight_end),
        )

    def at(self, slot: int, slot_s: int) -> tuple[int, int]:
        """(slot budget, slot spent) of ``slot``: Redis's, or what the roll will make of them."""
        if self.slot == slot:
            return self.slot_budget, self.slot_spent
        start_s, _ = slot_bounds(slot, slot_s)
        return slot_budget(
            self.budget - self.spent, start_s, self.flight_start_s, self.flight_end_s, slot_s
        ), 0


@dataclass
class EvenThrottle:
    """Per-worker serve probabilities of even-paced campaigns (``probability``), and which to watch."""

    slot_s: int
    clock: Clock = field(default_factory=SystemClock)
    #: Seconds between ticks (a simulation may tick less often than a server).
    tick_s: float = TICK_S
    probability: dict[str, float] = field(default_factory=dict)
    _watched: dict[str, None] = field(default_factory=dict)
    _last: dict[str, tuple[int, int]] = field(default_factory=dict)  # campaign → (slot, slot_spent)
    _state: dict[str, ThrottleState] = field(default_factory=dict)
    #: On a cluster: per-master clients for the tick's reads (a couple of connections each).
    _nodes: NodeClients | None = field(default=None, repr=False)
    _client_failures: ClientFailureLog = field(
        default_factory=lambda: ClientFailureLog(logger, "even pacing (probabilities kept)"), repr=False
    )

    @property
    def watched(self) -> list[str]:
        """The watched campaigns, oldest first: what a tick reads."""
        return list(self._watched)

    def watch(self, campaign_id: str) -> None:
        """Note an even campaign at the top of an auction: its probability is kept from the next tick."""
        if campaign_id not in self._watched:
            if len(self._watched) >= MAX_WATCHED:
                oldest = next(iter(self._watched))
                del self._watched[oldest]
                self.probability.pop(oldest, None)
                self._last.pop(oldest, None)
                self._state.pop(oldest, None)
            self._watched[campaign_id] = None

    def update(self, campaign_id: str, state: SlotState, now_s: float) -> None:
        """One tick of one campaign from its budget hash (``state.slot`` -1: no budget in Redis yet)."""
        if state.slot < 0:
            return  # no budget: the budget filter decides, nothing to pace against
        current = slot_id(now_s, self.slot_s)
        budget, spent = state.at(current, self.slot_s)
        start_s, _end = slot_bounds(current, self.slot_s)
        last = self._last.get(campaign_id)
        # Across a slot boundary the old slot's last charges are not known: the estimate is kept as is.
        earned = spent - last[1] if last is not None and last[0] == current else None
        paced = next_state(
            self._state.get(campaign_id, ThrottleState()),
            slot_budget_micros=budget,
            slot_spent_micros=spent,
            earned_micros=earned,
            elapsed_fraction=(now_s - start_s) / self.slot_s,
            tick_fraction=self.tick_s / self.slot_s,
        )
        self._state[campaign_id] = paced
        self.probability[campaign_id] = paced.p
        self._last[campaign_id] = (current, spent)

    async def tick(self, client: RedisClient) -> None:
        """Read the watched campaigns' budget hashes (one pipeline per Redis node) and update their
        probabilities. On a cluster, raises the first master's error after updating the campaigns of the
        masters that answered."""
        ids = self.watched
        if not ids:
            return
        keys = [names.budget_key(cid) for cid in ids]
        replies: Sequence[list[bytes | None] | None]
        error: BaseException | None
        if isinstance(client, RedisCluster):
            replies, error = await self._read_cluster(client, keys)
        else:
            replies, error = await _hmgets(client, keys), None
        now_s = self.clock.now()
        for i, (cid, reply) in enumerate(zip(ids, replies, strict=True)):
            if i % UPDATES_PER_TURN == 0:
                await asyncio.sleep(0)  # the requests waiting on this worker's loop go first
            if reply is not None:
                self.update(cid, SlotState.parse(reply), now_s)
        if error is not None:
            raise error

    async def _read_cluster(
        self, client: RedisCluster, keys: list[str]
    ) -> tuple[list[list[bytes | None] | None], BaseException | None]:
        """Each key's reply (None where its master failed) and the first failure."""
        if self._nodes is None or self._nodes.cluster is not client:
            await self.aclose()
            self._nodes = NodeClients(client, max_connections=2, wait_s=1.0)
        nodes = self._nodes
        await client.initialize()  # a no-op once connected
        groups: dict[str, tuple[aioredis.Redis, list[int]]] = {}
        for i, key in enumerate(keys):
            name, node = nodes.master_of(key)
            groups.setdefault(name, (node, []))[1].append(i)
        outcomes = await asyncio.gather(
            *(_hmgets(node, [keys[i] for i in idx]) for node, idx in groups.values()), return_exceptions=True
        )
        replies: list[list[bytes | None] | None] = [None] * len(keys)
        error: BaseException | None = None
        for (_node, idx), outcome in zip(groups.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                error = error or outcome
                continue
            for i, reply in zip(idx, outcome, strict=True):
                replies[i] = reply
        if error is not None:
            await nodes.refresh()  # a failover or slot move: the next tick asks the new masters
        return replies, error

    async def run(self, client: RedisClient) -> None:
        """Tick until cancelled; a Redis failure leaves the probabilities as they are."""
        try:
            while True:
                await asyncio.sleep(self.tick_s)
                try:
                    await self.tick(client)
                except Exception as exc:  # the tick's guard: Redis failing keeps the probabilities
                    if not is_redis_failure(exc):
                        raise
                    logger.debug("even pacing: budget states unreadable (%r); probabilities kept", exc)
                    self._client_failures.note(exc)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the per-master clients of a cluster (the client given to ``tick`` is its owner's)."""
        if self._nodes is not None:
            nodes, self._nodes = self._nodes, None
            await nodes.aclose()


async def _hmgets(client: aioredis.Redis, keys: list[str]) -> list[list[bytes | None]]:
    """``FIELDS`` of each budget hash in ``keys``, one pipeline (one node)."""
    return await hmget_many(client, keys, FIELDS)
