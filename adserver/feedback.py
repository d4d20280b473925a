"""Feedback: verify the request token, debit the budget atomically, publish the enriched event, answer.

Order of effects (invariant 6, a 200 means both are done):
1. verify the signed ``request_id`` (forged, tampered, expired → 404, nothing charged);
2. validate the body (→ 422);
3. one Redis script debits the campaign: de-duplicated on (request, action), capped at the remaining
   total and slot budget (Redis down or campaign budget missing → 503, nothing charged);
4. publish the enriched event to ``ad-feedback`` and wait for Kafka's acknowledgement (acks=all, batched
   with the other requests of its batch, and with those that came while a produce request was in
   flight); when Kafka refuses the event the debit is refunded and the answer is 503, so the client may
   retry; on a timeout with the event handed to the producer (it may still be written) the charge stays,
   marked in flight until Kafka answers (``_keep_in_flight``), and the answer is 503; a failure after
   which the event may have been written all the same (``may_have_landed``) keeps the charge too, and a
   retry settles it as an orphan's (below). If Kafka did store an event whose acknowledgement was lost,
   reconciliation books it (Kafka is the ledger's source of truth) and repairs Redis.
A duplicate is never charged again; in the first's worker it gets its first's outcome: 200 at once if
that event was acknowledged lately, otherwise when it is (or 503 with the first, if it is refunded), so
a 200 never precedes a refund. In another worker (workers share only Redis) it is an orphan candidate,
below.

An orphaned charge: a debit that ran (and replicated) but whose answer was lost (its master died, the
connection broke) was answered 503 and never published; the client's retry meets its de-duplication key
(after a failover, on the promoted replica). A duplicate that this worker is not publishing itself
waits until its first charge is older than any first worker could still be publishing or refunding it
(``publish_timeout_s`` + ``ORPHAN_MARGIN_S``, from the de-duplication key's remaining TTL), then is debited
again: a refunded first is gone and the retry is charged as a new one; a first that stays is looked up in
``ad-feedback`` (``adserver.published``) and, when it is not there, published again, with the first
charge's amount and the same deterministic ``event_id``, answered 200 only when Kafka acknowledges it. So a
retry within that age (the first's worker died between the debit and the publish, or its answer was lost
on the way) waits instead of being answered 200 without an event. When ``ad-feedback`` cannot be read
(a leader election: the first may be in the log all the same) the retry is answered 503, its charge kept,
and a later retry looks again. The ledger (``spend_events`` primary key) and the archive's readers
(``dropDuplicates``) count an event id once, so a copy published after a look-up that missed the first (it
landed after the look-up) costs a message, never money.

Group commit: steps 3 and 4 run for a batch of requests together, in a task of their own: one debit
script call for the batch (one Redis round trip, one AOF write and fsync; the debits still apply one by
one, each capped by what the previous left), then each charged event handed to the producer, then one
wait for every acknowledgement under one deadline. A worker has one debit call in Redis at a time (the
debit gate): the next batch is everything that arrived meanwhile, so under load batches grow instead of
queueing one fsync each behind each other (as the producer has one request in flight per broker). The
gate waits at most ``DEBIT_GATE_WAIT_S`` for a call: behind a Redis that stopped answering, batches go
side by side to their own timeouts instead of queueing behind each other's. Only the debit step is gated;
batches wait for Kafka side by side. Each request waits on its own future and gets its own answer: a
duplicate, an unknown campaign or an unacknowledged event in the batch affects only that request. A
request cancelled while it waits (its client went away) does not cancel the batch, so a charge is never
left without its event. Each batch's time in each stage (``STAGES``: the gate, the debit, the publish) and
its size are counted for ``/metrics`` (``FeedbackCounters``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import perf_counter
from typing import Any, Final, NamedTuple

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from adplatform import names
from adplatform.redis_client import ClientFailureLog, is_redis_failure
from adplatform.wire import FeedbackEvent, UserAction, encoder
from adserver.error import AdServerError
from adserver.http.metrics import BATCH_BUCKETS, LATENCY_BUCKETS_S, Histogram
from adserver.token import RequestToken, TokenError, TokenSigner, digest
from budget.budget_redis import BudgetStatus, BudgetStore, Debit, DebitRequest
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


class FeedbackError(AdServerError):
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


@functools.lru_cache(maxsize=4096)  # flight bounds repeat per campaign, and a batch shares its millisecond
def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Targeting(NamedTuple):
    """A campaign's fields of the enriched event, as the archive spells them."""

    age_range: str
    location: str
    gender: str
    income_bucket: str
    device_type: str
    start_time: str
    end_time: str


_UNKNOWN = _Targeting("unknown", "unknown", "unknown", "unknown", "unknown", "", "")


@functools.lru_cache(maxsize=4096)  # per campaign state: every event of a campaign repeats them
def _targeting(c: Campaign) -> _Targeting:
    age = (
        "All"
        if (c.target_age_start, c.target_age_end) == (0, 0)
        else f"{c.target_age_start}-{c.target_age_end}"
    )
    return _Targeting(
        age_range=age,
        location=f"{c.target_city}, {c.target_state}, {c.target_country}",
        gender=c.target_gender,
        income_bucket=c.target_income_bucket,
        device_type=c.target_device,
        start_time=_iso(c.flight_start_s * 1000),
        end_time=_iso(c.flight_end_s * 1000),
    )


#: Prices and charges repeat (a campaign's second prices), so each Decimal is built once (they are
#: immutable, so shared safely).
_micros_decimal = functools.lru_cache(maxsize=8192)(micros_to_decimal)
_cpm_decimal = functools.lru_cache(maxsize=8192)(cpm_units_to_decimal)


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
    t = _UNKNOWN if campaign is None else _targeting(campaign)
    return FeedbackEvent(
        event_id=event_id,
        campaign_id=token.campaign_id,
        user_id=token.user_id,
        request_id=request_id,
        auction_cpm=_cpm_decimal(token.clearing_cpm_units),
        auction_cpc=_micros_decimal(token.auction_cpc_micros),
        auction_cpa=_micros_decimal(token.auction_cpa_micros),
        target_age_range=t.age_range,
        target_location=t.location,
        target_gender=t.gender,
        target_income_bucket=t.income_bucket,
        target_device_type=t.device_type,
        campaign_start_time=t.start_time,
        campaign_end_time=t.end_time,
        expenditure_amount=_micros_decimal(charged_micros),
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


#: A batch's stages, in order: waiting for this worker's previous debit call (the gate); the debit script
#: call (a Redis round trip, its AOF fsync included); building the events and handing them to Kafka until
#: every acknowledgement is in (acks=all) or the publish deadline passes.
STAGES: Final = ("gate", "debit", "publish")


@dataclass
class FeedbackCounters:
    """Outcomes of this worker's feedback requests, exposed on ``/metrics`` (see ``adserver.http.health``)."""

    accepted: int = 0
    duplicates: int = 0
    rejected_tokens: int = 0
    unavailable: int = 0
    charged_micros: int = 0
    batches: int = 0
    #: Duplicates whose first charge was old enough to be orphaned, published again.
    republished: int = 0
    #: Seconds per batch in each stage (``STAGES``), where a feedback's latency goes.
    stages: dict[str, Histogram] = field(
        default_factory=lambda: {stage: Histogram(LATENCY_BUCKETS_S) for stage in STAGES}
    )
    #: Requests per batch.
    batch_requests: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))


@dataclass(slots=True)
class _Pending:
    """One accepted-so-far request waiting for its batch."""

    token: RequestToken
    request_id: str
    event_id: str
    action: UserAction
    body: FeedbackBody
    amount_micros: int
    now_ms: int
    future: asyncio.Future[bytes]
    #: A duplicate publishing its orphaned first charge again (never refunded: the charge is the first's).
    republished: bool = False


def _answer(p: _Pending, body: bytes) -> None:
    if not p.future.done():  # the request may have been cancelled meanwhile
        p.future.set_result(body)


def _refuse(p: _Pending, status: int, reason: str) -> None:
    if not p.future.done():  # a fresh exception per request: a raised instance collects tracebacks
        p.future.set_exception(FeedbackError(status, reason))


def may_have_landed(ack: asyncio.Future[Any]) -> bool:
    """Whether the failed acknowledgement ``ack`` leaves its event possibly written. The idempotent
    producer retries a retriable error itself, under the same sequence numbers, so the broker keeps one
    copy; it gives a batch up with one (``NotLeaderForPartitionError``, ``LeaderNotAvailableError``) only
    when the batch outlived its request timeout with no leader to send it to, which may be after a leader
    wrote it and died before answering. A non-retriable error is the broker's refusal of the batch (or the
    producer's, before sending it): not written."""
    if ack.cancelled():
        return False
    failure = ack.exception()
    return isinstance(failure, KafkaError) and bool(failure.retriable)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Done-callback for an acknowledgement no one waits for any more: read its outcome, so asyncio does
    not log "exception never retrieved"; reconciliation accounts for the event either way."""
    if not future.cancelled():
        future.exception()


#: The longest a batch waits for the debit call ahead of it (normal calls take a few milliseconds).
DEBIT_GATE_WAIT_S = 0.05
#: Beyond its publish timeout, how long a first charge's worker may still take to publish or refund it
#: (the debit's reply, the refund call): a duplicate of an older charge is published again.
ORPHAN_MARGIN_S = 1.0
#: How many acknowledged event ids a worker remembers, so a duplicate of one is answered without waiting.
ACKED_MEMORY = 65_536
#: Longest an unacknowledged event's charge stays marked in flight (Kafka answers every send within its
#: request timeout and retries; this bounds a mark its dead worker left).
IN_FLIGHT_MARK_S = 60


class KeyPartitions:
    """Each key's partition as the producer's default partitioner picks it (murmur2 of the key over the
    topic's partitions, so a campaign's events stay in one partition, in order), remembered per key:
    aiokafka's pure-Python murmur2 and its partition lists cost about as much per event as encoding it.
    Forgotten when the topic's partitions change, and past ``MAX_KEYS`` keys."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._partitions: list[int] = []
        self._of: dict[bytes, int] = {}
        self._default = DefaultPartitioner()

    def of(self, partitions: Collection[int]) -> Callable[[bytes], int | None]:
        """The picker for a topic that has ``partitions`` now (``producer.partitions_for``)."""
        ordered = sorted(partitions)  # the order the default partitioner is given
        if ordered != self._partitions or len(self._of) > self.MAX_KEYS:
            self._partitions, self._of = ordered, {}
        return self._pick

    def _pick(self, key: bytes) -> int | None:
        partition = self._of.get(key)
        if partition is None and self._partitions:  # (none known: the producer picks, as without us)
            partition = self._of[key] = self._default(key, self._partitions, self._partitions)
        return partition


def _in_flight_key(campaign_id: str, event_id: str) -> str:
    """The mark of a charge whose event Kafka has not answered yet (in the de-duplication key's slot)."""
    return names.dedup_key(campaign_id, event_id) + ":in-flight"


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
        max_batch: int = 256,
        published: Callable[[dict[str, int]], Awaitable[set[str]]] | None = None,
    ) -> None:
        self._signer = signer
        self._budgets = budgets
        self._producer = producer
        self._topic = topic
        self._lookup = lookup
        self._clock = clock
        self._dedup_ttl_s = dedup_ttl_s
        self._publish_timeout_s = publish_timeout_s
        self._max_batch = max_batch
        #: Which of the given event ids (→ earliest time, ms) are in ``ad-feedback`` already; None: not
        #: looked up (an orphan is then published again, which costs a message).
        self._published = published
        self._partitions = KeyPartitions()
        self._pending: list[_Pending] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: Done when the debit call in Redis returns; the next batch forms while it waits (the gate).
        self._debit_in_flight: asyncio.Future[None] | None = None
        #: Event id → duplicates waiting for that charged event's acknowledgement (its outcome is theirs).
        self._unacked: dict[str, list[_Pending]] = {}
        #: Event ids this worker saw acknowledged lately (oldest first): their duplicates get 200 at once.
        self._acked: OrderedDict[str, None] = OrderedDict()
        self.counters = FeedbackCounters()
        #: Every failure of the Redis client counts as Redis unavailable (503, nothing charged): a failure
        #: that is not a Redis error (a bug of the client) is logged too, now and then.
        self._client_failures = ClientFailureLog(logger, "feedback")

    async def handle(self, request_id: str, raw_body: bytes) -> bytes:
        """Returns the 200 body; raises ``FeedbackError`` with the status otherwise."""
        return await self.submit(request_id, raw_body)

    def submit(self, request_id: str, raw_body: bytes) -> asyncio.Future[bytes]:
        """``handle`` without a coroutine: a request refused up front (token, body) raises
        ``FeedbackError`` here; an accepted one gets the future of its answer (the 200 body, or a
        ``FeedbackError``), settled by its batch. The protocol's direct path (``adserver.http.direct``)
        answers from the future's callback, with no task per request."""
        now_ms = int(self._clock.now() * 1000)
        try:
            token = self._signer.verify(request_id, now_ms=now_ms)
        except TokenError:
            self.counters.rejected_tokens += 1
            raise FeedbackError(404, "Unknown or expired request_id.") from None
        body, action = parse_body(raw_body)
        if action == "click":
            amount = token.auction_cpc_micros
        elif action == "acquisition":
            amount = token.auction_cpa_micros
        else:  # a view is free
            amount = 0
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._enqueue(_Pending(token, request_id, f"{digest(request_id)}:{action}", action, body, amount,
                               now_ms, future))  # fmt: skip
        return future

    def _enqueue(self, p: _Pending) -> None:
        pending = self._pending
        pending.append(p)
        if len(pending) == 1:
            # The task's first step runs in the next iteration of the loop, after every request that is
            # runnable in this one has joined ``_pending``: it takes them all.
            self._spawn(self._run(None))
        elif len(pending) >= self._max_batch:
            self._flush()

    async def _retry_later(self, p: _Pending, delay_s: float) -> None:
        """Debit ``p`` again once its first charge is past every worker's publish window."""
        try:
            await asyncio.sleep(delay_s)
        except asyncio.CancelledError:  # the worker is stopping: the client retries
            _refuse(p, 503, "the server is stopping; retry")
            raise
        if not p.future.done():  # its client may have gone meanwhile
            p.now_ms = int(self._clock.now() * 1000)  # a copy's time is this minus its first's age
            self._enqueue(p)

    async def aclose(self) -> None:
        """Run what is pending and wait for every batch in flight (before the producer stops)."""
        self._flush()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._spawn(self._run(batch))

    def _spawn(self, run: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(run)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Pending] | None) -> None:
        """Commit ``batch``, or (None) whatever is pending once this task passes the debit gate."""
        taken: list[_Pending] = batch or []  # answered 503/500 below if the commit does not end normally
        try:
            entered = perf_counter()
            await self._pass_gate()
            if batch is None:
                batch, self._pending = self._pending, []
                taken = batch
            if not batch:  # taken already by a full batch's flush, or by the batch that passed first
                return
            stages = self.counters.stages
            passed = perf_counter()
            stages["gate"].observe(passed - entered)
            in_flight = self._debit_in_flight = asyncio.get_running_loop().create_future()
            try:
                debits = await self._debit(batch)
            finally:
                in_flight.set_result(None)
                stages["debit"].observe(perf_counter() - passed)
            if debits is not None:
                await self._commit(batch, debits)
        except asyncio.CancelledError:  # the worker is stopping: whatever is unanswered may be retried
            for p in taken:
                _refuse(p, 503, "the server is stopping; retry")
            raise
        except Exception:  # a bug: answer 500, keep the worker; reconciliation repairs Redis from Kafka
            logger.exception("a feedback batch of %d requests failed", len(taken))
            for p in taken:
                _refuse(p, 500, "Internal server error.")

    async def _pass_gate(self) -> None:
        """Until no debit call is in Redis, or ``DEBIT_GATE_WAIT_S`` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEBIT_GATE_WAIT_S
        while (busy := self._debit_in_flight) is not None and not busy.done():
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.wait((busy,), timeout=left)

    async def _debit(self, batch: list[_Pending]) -> list[Debit] | None:
        """One debit script call for the batch; None (every request refused) if Redis is unavailable."""
        counters = self.counters
        counters.batches += 1
        counters.batch_requests.observe(len(batch))
        now_s = self._clock.now()
        requests = [DebitRequest(p.token.campaign_id, p.event_id, p.amount_micros) for p in batch]
        try:
            return await self._budgets.debit_many(requests, now_s=now_s, dedup_ttl_s=self._dedup_ttl_s)
        except Exception as exc:  # the debit's guard: Redis failing is a 503; a bug of ours is raised (500)
            if not is_redis_failure(exc):
                raise
            self._client_failures.note(exc)
            counters.unavailable += len(batch)
            reason = f"budget store unavailable ({type(exc).__name__}); nothing was charged"
            for p in batch:
                _refuse(p, 503, reason)
            return None

    async def _commit(self, batch: list[_Pending], debits: list[Debit]) -> None:
        """Answer duplicates and unknown campaigns; publish the charged and answer them (or refund)."""
        counters = self.counters
        charged: list[tuple[_Pending, Debit]] = []
        orphans: list[tuple[_Pending, Debit]] = []
        unacked = self._unacked
        for p, debit in zip(batch, debits, strict=True):
            if debit.status == BudgetStatus.DUPLICATE:
                counters.duplicates += 1
                waiters = unacked.get(p.event_id)
                if waiters is not None:  # still waiting for Kafka: a 200 now could precede a refund
                    waiters.append(p)
                elif p.event_id in self._acked:
                    _answer(p, SUCCESS)
                else:  # acknowledged, in flight in another worker, or orphaned: the first's age says
                    orphans.append((p, debit))
            elif debit.status == BudgetStatus.UNKNOWN:
                counters.unavailable += 1
                _refuse(p, 503, "campaign budget not available (being rebuilt); nothing was charged")
            else:
                charged.append((p, debit))
                unacked[p.event_id] = []
        if orphans:
            charged += await self._orphaned(orphans)
        if not charged:
            return
        try:
            await self._publish(charged)
        finally:
            for p, _ in charged:  # only if _publish did not settle them (it raised)
                for waiting in unacked.pop(p.event_id, ()):
                    _refuse(waiting, 503, "feedback could not be processed; retry")

    async def _orphaned(self, duplicates: list[tuple[_Pending, Debit]]) -> list[tuple[_Pending, Debit]]:
        """Send each duplicate whose first charge is younger than every worker's publish window back to the
        debit once it is past it; answer 200 those whose first event is in ``ad-feedback``; return the
        others, their first charge as theirs, to be published again (see the module doc)."""
        client = self._budgets.client
        keys = [names.dedup_key(p.token.campaign_id, p.event_id) for p, _ in duplicates]
        marks = [_in_flight_key(p.token.campaign_id, p.event_id) for p, _ in duplicates]
        try:  # one command per key: on a cluster each is routed to its slot's master
            ttls_ms = await asyncio.gather(*(client.pttl(key) for key in keys))
            marked = await asyncio.gather(*(client.exists(m) for m in marks))
        except Exception as exc:
            if not is_redis_failure(exc):
                raise
            self._client_failures.note(exc)
            ttls_ms = [-2] * len(keys)  # unknown: a whole window, then the debit tells again
            marked = [0] * len(keys)
        oldest_in_flight_ms = (self._publish_timeout_s + ORPHAN_MARGIN_S) * 1000
        old: list[tuple[_Pending, Debit, int]] = []
        for (p, debit), ttl_ms, in_flight in zip(duplicates, ttls_ms, marked, strict=True):
            if int(in_flight):  # its first's event may still be written: neither charged nor published
                self.counters.unavailable += 1
                _refuse(
                    p, 503, "the first attempt's event may still be written; retry with the same request_id"
                )
                continue
            age_ms = self._dedup_ttl_s * 1000 - int(ttl_ms)
            if int(ttl_ms) < 0 or age_ms < oldest_in_flight_ms:
                # Its first may be in flight in another worker, acknowledged there, refunded soon, or
                # orphaned by a worker that died before publishing: only after the window is it settled.
                wait_ms = oldest_in_flight_ms - (age_ms if int(ttl_ms) >= 0 else 0)
                self._spawn(self._retry_later(p, wait_ms / 1000 + 0.05))
                continue
            old.append((p, debit, age_ms))
        found, failure = await self._look_up(old)
        again: list[tuple[_Pending, Debit]] = []
        for p, debit, age_ms in old:
            if p.event_id in found:
                _answer(p, SUCCESS)
                continue
            waiters = self._unacked.get(p.event_id)
            if waiters is not None:  # another duplicate publishes it already
                waiters.append(p)
                continue
            if failure is not None:  # its first may be in the log: a copy now could be a second one
                self.counters.unavailable += 1
                _refuse(
                    p, 503, f"event log unavailable ({failure}): the first attempt's event may be written; "
                    "retry with the same request_id",
                )  # fmt: skip
                continue
            self.counters.republished += 1
            p.republished = True
            # The copy carries the first charge's time (its key's age), not the retry's: the archive and
            # the warehouse keep an event id once per day, so a copy must land on the first's day.
            p.now_ms -= age_ms
            again.append((p, debit))  # a duplicate's debit carries the first charge's amount
            self._unacked[p.event_id] = []  # later duplicates wait for this copy's outcome
        return again

    async def _look_up(self, old: list[tuple[_Pending, Debit, int]]) -> tuple[set[str], str | None]:
        """The event ids of ``old`` (duplicates and their first charge's age) already in ``ad-feedback``,
        and why they could not be looked up (None: they were). A worker without a look-up publishes every
        orphan again (a copy of a first that did land costs a message)."""
        if not old or self._published is None:
            return set(), None
        since = {p.event_id: p.now_ms - age_ms for p, _, age_ms in old}
        try:
            return await self._published(since), None
        except (KafkaError, OSError, TimeoutError) as exc:
            # During a leader election the first may be in the log and unreadable: publishing it again
            # would be a copy. The retry is answered 503, its charge kept, until the log can be read.
            logger.warning("ad-feedback not readable (%r): %d orphans answered 503", exc, len(since))
            return set(), type(exc).__name__

    async def _publish(self, charged: list[tuple[_Pending, Debit]]) -> None:
        """Hand every event to the producer, wait for the acknowledgements under one deadline; answer the
        acknowledged, refund and refuse the rest."""
        started = perf_counter()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout_s
        acks: list[asyncio.Future[Any]] = []
        #: Each partition's last acknowledgement (see below).
        last: dict[int | None, asyncio.Future[Any]] = {}
        failure: BaseException | None = None
        try:
            async with asyncio.timeout_at(deadline):
                # Waits for the topic's metadata as send() would (a missing topic never has any).
                partition_of = self._partitions.of(await self._producer.partitions_for(self._topic))
                for p, debit in charged:
                    cid = p.token.campaign_id
                    event = build_event(p.token, p.request_id, p.event_id, p.action, p.body,
                                        debit.charged_micros, self._lookup(cid), p.now_ms)  # fmt: skip
                    value = encoder.encode(event)
                    key = cid.encode()
                    partition = partition_of(key)
                    ack = await self._producer.send(self._topic, value, key=key, partition=partition)
                    acks.append(ack)
                    last[partition] = ack
        except (KafkaError, TimeoutError, OSError) as exc:
            failure = exc  # the events not handed over were never sent
        if acks:
            # The producer sends a partition's batches one after another and settles a batch's events in
            # order, so once each partition's last event is settled the others usually are too: waiting
            # for those few first spares a callback (and a loop handle) per event. Whatever is still open
            # is then waited for as before, under the same deadline.
            await asyncio.wait(last.values(), timeout=max(0.0, deadline - loop.time()))
            rest = [ack for ack in acks if not ack.done()]
            left_s = deadline - loop.time()
            if rest and left_s > 0:
                await asyncio.wait(rest, timeout=left_s)
        counters = self.counters
        counters.stages["publish"].observe(perf_counter() - started)
        refused: list[tuple[_Pending, Debit]] = []
        #: Failed, but possibly written (and the failure's name): the charge stays (a retry finds the event,
        #: or publishes it).
        unsure: list[tuple[_Pending, str]] = []
        in_flight: list[tuple[_Pending, Debit, asyncio.Future[Any]]] = []
        for i, (p, debit) in enumerate(charged):
            ack = acks[i] if i < len(acks) else None
            if ack is not None and ack.done() and not ack.cancelled() and ack.exception() is None:
                counters.accepted += 1
                counters.charged_micros += debit.charged_micros
                _answer(p, SUCCESS)
                for waiting in self._unacked.pop(p.event_id, ()):
                    _answer(waiting, SUCCESS)
                self._acked[p.event_id] = None
                if len(self._acked) > ACKED_MEMORY:
                    self._acked.popitem(last=False)
                continue
            if ack is not None and not ack.done():
                in_flight.append((p, debit, ack))
                failure = failure or TimeoutError()
                continue
            if ack is not None:
                if may_have_landed(ack):
                    unsure.append((p, type(ack.exception()).__name__))
                    continue
                failure = failure or (ack.exception() if not ack.cancelled() else TimeoutError())
            refused.append((p, debit))
        kept = await self._keep_in_flight(in_flight)
        refused += [(p, d) for p, d, _ in in_flight if p.event_id not in kept]
        for p, failed in unsure:
            self._unavailable(
                p,
                f"event log unavailable ({failed}): the event may be written; retry with the same request_id",
            )
        counters.unavailable += len(unsure)
        if not refused and not kept:
            return
        name = type(failure).__name__ if failure is not None else "TimeoutError"
        reason = f"event log unavailable ({name}); nothing was charged"
        # An orphaned charge stays (it is the first's, and the next retry publishes it again).
        refunds = [(p, d) for p, d in refused if not p.republished]
        await asyncio.gather(*(self._refund(p.token.campaign_id, p.event_id, d) for p, d in refunds))
        counters.unavailable += len(refused) + len(kept)
        for p, _ in refused:
            self._unavailable(p, f"event log unavailable ({name}); retry" if p.republished else reason)
        for p, _, _ in in_flight:
            if p.event_id in kept:
                self._unavailable(
                    p, "event log slow: the event may still be written; retry with the same request_id"
                )

    def _unavailable(self, p: _Pending, why: str) -> None:
        """Answer ``p`` 503, and the duplicates waiting for its event's outcome with it."""
        _refuse(p, 503, why)
        for waiting in self._unacked.pop(p.event_id, ()):
            _refuse(waiting, 503, why)

    async def _keep_in_flight(self, in_flight: list[tuple[_Pending, Debit, asyncio.Future[Any]]]) -> set[str]:
        """Events handed to Kafka and not acknowledged in time may still be written (a leader election
        takes seconds): refunding them and publishing a retry's event too would put the event id in the log
        twice. Their charges stay, each marked in flight (a key beside its de-duplication key): a retry
        meanwhile is answered 503 without a debit or a publish. When Kafka answers, the mark goes (and on
        a refusal the charge is refunded; after a failure that ``may_have_landed`` it stays, for a retry to
        find the event or publish it); a mark outlives a dead worker by ``IN_FLIGHT_MARK_S`` at most.
        The event ids marked; the others (Redis did not answer) are refunded as before."""
        if not in_flight:
            return set()
        client = self._budgets.client
        marks = [_in_flight_key(p.token.campaign_id, p.event_id) for p, _, _ in in_flight]
        try:
            await asyncio.gather(*(client.set(m, b"1", px=IN_FLIGHT_MARK_S * 1000) for m in marks))
        except Exception as exc:
            if not is_redis_failure(exc):
                raise
            self._client_failures.note(exc)
            for _, _, ack in in_flight:
                ack.add_done_callback(_retrieve)
            return set()
        for (p, debit, ack), mark in zip(in_flight, marks, strict=True):
            ack.add_done_callback(functools.partial(self._settled_late, p, debit, mark))
        return {p.event_id for p, _, _ in in_flight}

    def _settled_late(self, p: _Pending, debit: Debit, mark: str, ack: asyncio.Future[Any]) -> None:
        """Kafka answered an event after its request got a 503: unmark it (refunded first if it was not
        written: the producer refused it, see ``may_have_landed``)."""
        failed = ack.cancelled() or (ack.exception() is not None and not may_have_landed(ack))
        self._spawn(self._unmark(p, debit, mark, refund=failed))

    async def _unmark(self, p: _Pending, debit: Debit, mark: str, *, refund: bool) -> None:
        if refund and not p.republished:
            await self._refund(p.token.campaign_id, p.event_id, debit)
        try:
            await self._budgets.client.delete(mark)
        except Exception as exc:
            if not is_redis_failure(exc):
                raise
            self._client_failures.note(exc)
            logger.warning("in-flight mark %s not deleted; it expires in %d s", mark, IN_FLIGHT_MARK_S)

    async def _refund(self, campaign_id: str, event_id: str, debit: Debit) -> None:
        try:
            await self._budgets.refund(campaign_id, event_id, debit)
        except Exception as exc:
            if not is_redis_failure(exc):
                raise
            self._client_failures.note(exc)
            # Redis went away too: reconciliation repairs Redis from the ledger (Kafka has no event).
            logger.warning(
                "refund of %s failed; reconciliation will repair campaign %s", event_id, campaign_id
            )
