"""Campaign budgets in Redis: the adapter every process uses to run the budget scripts.

The money rules live in the Lua of ``budget.script`` (one hash per campaign, each change one atomic
script; the field layout and the exhaustion signal are described there). This module turns campaigns and
debits into script calls and their replies into values.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from adplatform import names
from budget import script
from index import pacing
from index.campaign import Campaign

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
        # Pub/sub is server-wide: the channel is the one of this client's logical database.
        self._channel = names.budget_channel_of(client)
        self._init = client.register_script(script.INIT)
        self._debit = client.register_script(script.DEBIT)
        self._refund = client.register_script(script.REFUND)
        self._pace = client.register_script(script.PACE)
        self._repair = client.register_script(script.REPAIR)

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
            args: list[Any] = [slot, self._slot_s, self._channel]
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
        args: list[Any] = [slot, self._slot_s, self._channel, dedup_ttl_s]
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
        args: list[Any] = [debit.charged_micros, debit.slot, self._channel]
        return bool(int(await self._refund(keys=keys, args=args)))

    async def pace(self, campaign_ids: Iterable[str], now_s: float) -> dict[str, bool]:
        """Roll every campaign to the current slot; returns campaign id → blocked after the roll."""
        slot = pacing.slot_id(now_s, self._slot_s)
        ids = list(campaign_ids)
        pipe = self._client.pipeline(transaction=False)
        for cid in ids:
            args: list[Any] = [slot, self._slot_s, self._channel]
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
            campaign.flight_start_s, campaign.flight_end_s, slot, self._slot_s, self._channel,
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
            if value is not None:
                out[names.campaign_id_of(key.decode() if isinstance(key, bytes) else key)] = int(value)
        return out
