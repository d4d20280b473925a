"""Feedback: verify the request token, debit the budget atomically, publish the enriched event, answer.

Order of effects (invariant 6, a 200 means both are done):
1. verify the signed ``request_id`` (forged, tampered, expired → 404, nothing charged);
2. validate the body (→ 422);
3. one Redis script debits the campaign: de-duplicated on (request, action), capped at the remaining
   total and slot budget (Redis down or campaign budget missing → 503, nothing charged);
4. publish the enriched event to ``ad-feedback`` and wait for Kafka's acknowledgement (acks=all, batched
   with the other requests by the producer's linger); on failure or timeout the debit is refunded and the
   answer is 503, so the client may retry. If Kafka did store an event whose acknowledgement was lost,
   reconciliation books it (Kafka is the ledger's source of truth) and repairs Redis.
A duplicate answers 200 without a second event: the first one was already published.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from adplatform.budget_redis import BudgetStatus, BudgetStore, Debit
from adplatform.wire import FeedbackEvent, UserAction, encoder
from adserver.token import RequestToken, TokenError, TokenSigner, digest
from index.campaign import Campaign
from index.money import cpm_units_to_decimal, micros_to_decimal
from index.pacing import Clock

logger = logging.getLogger(__name__)

NOT_FOUND = b'{"detail":"Unknown or expired request_id."}'
SUCCESS = b'{"status":"Success"}'


class FeedbackBody(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """The original platform's contract: each flag 0 or 1."""

    view: int = 0
    click: int = 0
    acquisition: int = 0


_body_decoder = msgspec.json.Decoder(FeedbackBody)


class FeedbackError(Exception):
    """A feedback request that cannot be accepted; carries the HTTP status and a JSON body."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.body = msgspec.json.encode({"detail": detail})


def parse_body(raw: bytes) -> tuple[FeedbackBody, UserAction]:
    """Decode and validate a feedback body; the charged action (acquisition wins over click over view)."""
    try:
        body = _body_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise FeedbackError(422, f"invalid feedback body: {exc}") from None
    except msgspec.DecodeError:
        raise FeedbackError(422, "feedback body must be a JSON object") from None
    for name in ("view", "click", "acquisition"):
        value = getattr(body, name)
        if value not in (0, 1) or isinstance(value, bool):
            raise FeedbackError(422, f"{name} must be 0 or 1")
    if body.acquisition:
        return body, "acquisition"
    if body.click:
        return body, "click"
    if body.view:
        return body, "view"
    raise FeedbackError(422, "at least one of view, click, acquisition must be 1")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _age_range(c: Campaign | None) -> str:
    if c is None:
        return "unknown"
    return (
        "All"
        if (c.target_age_start, c.target_age_end) == (0, 0)
        else f"{c.target_age_start}-{c.target_age_end}"
    )


def build_event(
    token: RequestToken,
    request_id: str,
    event_id: str,
    action: UserAction,
    body: FeedbackBody,
    charged_micros: int,
    campaign: Campaign | None,
    now_ms: int,
) -> FeedbackEvent:
    """The enriched ``ad-feedback`` message (the original archive's fields, plus the user's attributes)."""
    return FeedbackEvent(
        event_id=event_id,
        campaign_id=token.campaign_id,
        user_id=token.user_id,
        request_id=request_id,
        auction_cpm=cpm_units_to_decimal(token.clearing_cpm_units),
        auction_cpc=micros_to_decimal(token.auction_cpc_micros),
        auction_cpa=micros_to_decimal(token.auction_cpa_micros),
        target_age_range=_age_range(campaign),
        target_location=(
            f"{campaign.target_city}, {campaign.target_state}, {campaign.target_country}"
            if campaign
            else "unknown"
        ),
        target_gender=campaign.target_gender if campaign else "unknown",
        target_income_bucket=campaign.target_income_bucket if campaign else "unknown",
        target_device_type=campaign.target_device if campaign else "unknown",
        campaign_start_time=_iso(campaign.flight_start_s * 1000) if campaign else "",
        campaign_end_time=_iso(campaign.flight_end_s * 1000) if campaign else "",
        expenditure_amount=micros_to_decimal(charged_micros),
        expenditure_micros=charged_micros,
        user_action=action,
        timestamp=_iso(now_ms),
        timestamp_ms=now_ms,
        click=body.click,
        view=body.view,
        acquisition=body.acquisition,
        user_age=token.user_age,
        user_gender=token.user_gender,
        user_device_type=token.user_device_type,
        user_city=token.user_city,
    )


@dataclass
class FeedbackCounters:
    accepted: int = 0
    duplicates: int = 0
    rejected_tokens: int = 0
    unavailable: int = 0
    charged_micros: int = 0


class FeedbackService:
    """Everything feedback needs, created in the app's lifespan."""

    def __init__(
        self,
        *,
        signer: TokenSigner,
        budgets: BudgetStore,
        producer: AIOKafkaProducer,
        topic: str,
        lookup: Callable[[str], Campaign | None],
        clock: Clock,
        dedup_ttl_s: int,
        publish_timeout_s: float = 2.0,
    ) -> None:
        self._signer = signer
        self._budgets = budgets
        self._producer = producer
        self._topic = topic
        self._lookup = lookup
        self._clock = clock
        self._dedup_ttl_s = dedup_ttl_s
        self._publish_timeout_s = publish_timeout_s
        self.counters = FeedbackCounters()

    async def handle(self, request_id: str, raw_body: bytes) -> bytes:
        """Returns the 200 body; raises ``FeedbackError`` with the status otherwise."""
        now_s = self._clock.now()
        now_ms = int(now_s * 1000)
        try:
            token = self._signer.verify(request_id, now_ms=now_ms)
        except TokenError:
            self.counters.rejected_tokens += 1
            raise FeedbackError(404, "Unknown or expired request_id.") from None
        body, action = parse_body(raw_body)
        amount = {"view": 0, "click": token.auction_cpc_micros, "acquisition": token.auction_cpa_micros}[
            action
        ]
        event_id = f"{digest(request_id)}:{action}"
        try:
            debit = await self._budgets.debit(
                token.campaign_id, event_id, amount, now_s=now_s, dedup_ttl_s=self._dedup_ttl_s
            )
        except (RedisError, OSError) as exc:
            self.counters.unavailable += 1
            raise FeedbackError(
                503, f"budget store unavailable ({type(exc).__name__}); nothing was charged"
            ) from None
        if debit.status == BudgetStatus.DUPLICATE:
            self.counters.duplicates += 1
            return SUCCESS
        if debit.status == BudgetStatus.UNKNOWN:
            self.counters.unavailable += 1
            raise FeedbackError(503, "campaign budget not available (being rebuilt); nothing was charged")
        event = build_event(token, request_id, event_id, action, body, debit.charged_micros,
                            self._lookup(token.campaign_id), now_ms)  # fmt: skip
        try:
            future = await asyncio.wait_for(
                self._producer.send(self._topic, encoder.encode(event), key=token.campaign_id.encode()),
                self._publish_timeout_s,
            )
            await asyncio.wait_for(future, self._publish_timeout_s)
        except (KafkaError, TimeoutError, OSError) as exc:
            await self._refund(token.campaign_id, event_id, debit)
            self.counters.unavailable += 1
            raise FeedbackError(
                503, f"event log unavailable ({type(exc).__name__}); nothing was charged"
            ) from None
        self.counters.accepted += 1
        self.counters.charged_micros += debit.charged_micros
        return SUCCESS

    async def _refund(self, campaign_id: str, event_id: str, debit: Debit) -> None:
        try:
            await self._budgets.refund(campaign_id, event_id, debit)
        except (RedisError, OSError):
            # Redis went away too: reconciliation repairs Redis from the ledger (Kafka has no event).
            logger.warning(
                "refund of %s failed; reconciliation will repair campaign %s", event_id, campaign_id
            )
