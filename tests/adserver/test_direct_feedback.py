"""Feedback answered directly by ``GuardedHttpToolsProtocol`` (``adserver.http.direct``) writes the same
bytes, counts the same metrics and outcomes, and handles the connection as the ASGI path does: every
request is sent twice, once to a protocol with its direct path and once without, each time to a fresh
``FeedbackService`` over a fake budget store and producer (no stack: the debit and the acknowledgement are
the service's, unchanged; this checks the HTTP edge)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, NotLeaderForPartitionError
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.applications import Starlette
from uvicorn.server import ServerState as UvicornState

from adplatform.config import load_config
from adserver.app import create_app
from adserver.feedback import FeedbackService
from adserver.http.direct import feedback_target
from adserver.http.protocol import GuardedHttpToolsProtocol
from adserver.lifespan import build_state
from adserver.state import StateRef
from adserver.token import RequestToken, TokenSigner
from budget.budget_redis import BudgetStatus, BudgetStore, Debit, DebitRequest
from index.pacing import ManualClock
from tests.adserver.serving import CountingApp, guarded_uvicorn
from tests.adserver.test_direct_serve import DEFAULTS, Transport, state_of

NOW_MS = 1_700_000_000_000
CLOSE = "connection: close\r\n"


class FakeBudgets:
    """The ``BudgetStore`` calls a feedback batch makes: each dedup id charged once, or Redis down."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.charged: dict[str, int] = {}
        self.refunded: list[str] = []

    async def debit_many(
        self, requests: Sequence[DebitRequest], *, now_s: float, dedup_ttl_s: int
    ) -> list[Debit]:
        if self.down:
            raise RedisConnectionError("Redis is down (fake)")
        out = []
        for r in requests:
            duplicate = r.dedup_id in self.charged
            self.charged.setdefault(r.dedup_id, r.amount_micros)
            status = BudgetStatus.DUPLICATE if duplicate else BudgetStatus.CHARGED
            out.append(Debit(status, self.charged[r.dedup_id], False, 0))
        return out

    async def refund(self, campaign_id: str, dedup_id: str, debit: Debit) -> bool:
        self.refunded.append(dedup_id)
        self.charged.pop(dedup_id, None)
        return True


class FakeProducer:
    """``send`` hands back the acknowledgement's future: acknowledged at once, failed with ``fail``, or
    left pending until ``release()``."""

    def __init__(self, *, fail: KafkaError | None = None, hold: bool = False) -> None:
        self.fail = fail
        self.hold = hold
        self.sent: list[bytes] = []
        self._held: list[asyncio.Future[Any]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    async def send(self, topic: str, value: bytes, key: bytes, partition: int | None) -> asyncio.Future[Any]:
        self.sent.append(value)
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.hold:
            self._held.append(ack)
        elif self.fail is not None:
            ack.set_exception(self.fail)
        else:
            ack.set_result(None)
        return ack

    def release(self) -> None:
        for ack in self._held:
            ack.set_result(None)
        self._held.clear()


@pytest.fixture
def app() -> Starlette:
    """The ad-server app with a ready state (no lifespan, nothing connected)."""
    app = create_app()
    ref: StateRef = app.state.ref
    state = build_state(load_config({}))
    state.refresher.ready.set()
    ref.state = state
    return app


def request_id(app: Starlette, nonce: str = "n1") -> str:
    token = RequestToken(nonce=nonce, campaign_id="c1", campaign_version=1, issued_ms=NOW_MS,
                         user_id="u1", clearing_cpm_units=17_500, auction_cpc_micros=100,
                         auction_cpa_micros=2_000)  # fmt: skip
    return state_of(app).signer.issue(token)


def faked_service(signer: TokenSigner, budgets: FakeBudgets, producer: object) -> FeedbackService:
    """A feedback path as the lifespan component builds it, over a fake budget store and producer."""
    return FeedbackService(
        signer=signer,
        budgets=cast(BudgetStore, budgets),
        producer=cast(AIOKafkaProducer, producer),
        topic="ad-feedback",
        lookup=lambda campaign_id: None,
        clock=ManualClock(NOW_MS / 1000),
        dedup_ttl_s=3600,
        publish_timeout_s=5.0,
    )


def service(app: Starlette, budgets: FakeBudgets, producer: FakeProducer) -> FeedbackService:
    """A fresh feedback path for the app (as its lifespan component builds it, over fakes)."""
    feedback = state_of(app).feedback = faked_service(state_of(app).signer, budgets, producer)
    return feedback


BODY = '{"view": 1, "click": 1}'


def post(rid: str, body: str = BODY, *, extra: str = "", length: bool = True) -> bytes:
    head = f"POST /ad/{rid}/feedback HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{extra}"
    if length:
        head += f"content-length: {len(body)}\r\n"
    return f"{head}\r\n{body}".encode()


def get_serve(extra: str = "") -> bytes:
    return f"GET /ad/user/u1/serve?age=x HTTP/1.1\r\nhost: x\r\n{extra}\r\n".encode()


class Exchange:
    """One connection to a fresh protocol: feed it bytes, let its tasks and batches run, read the writes."""

    def __init__(self, app: Starlette, *, direct: bool, heads: bool = True) -> None:
        config = uvicorn.Config(
            app, lifespan="off", access_log=False, log_level="warning", proxy_headers=False
        )
        server_state = UvicornState()
        server_state.default_headers = DEFAULTS
        self.protocol = GuardedHttpToolsProtocol(config, server_state, {}, asyncio.get_running_loop())
        self.transport = Transport()
        self.protocol.connection_made(self.transport)  # type: ignore[arg-type]  # the calls a protocol makes
        if not direct:
            self.protocol._direct = None
        if not heads:  # every request through httptools' callbacks (no head match)
            self.protocol._heads = self.protocol._direct_feedback = False
        self.asgi_calls = 0
        inner = self.protocol.app

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            self.asgi_calls += 1
            await inner(scope, receive, send)

        self.protocol.app = counted

    async def send(self, data: bytes) -> list[bytes]:
        self.protocol.data_received(data)
        await settle()
        return self.transport.writes

    def close(self) -> None:
        self.protocol.connection_lost(None)


async def settle() -> None:
    for _ in range(50):  # the batch task, the fake debit and acknowledgement, the ASGI path's task
        await asyncio.sleep(0)


class Outcome(NamedTuple):
    writes: list[bytes]
    closed: bool
    budgets: FakeBudgets
    #: Requests the ASGI app saw.
    asgi_calls: int


async def both(
    app: Starlette,
    data: bytes,
    *,
    budgets: dict[str, Any] | None = None,
    fail: KafkaError | None = None,
    heads: bool = True,
) -> tuple[Outcome, Outcome]:
    """``data`` on one connection through the ASGI path, then through the direct path (fresh services;
    without ``heads``, every request read by httptools' callbacks, none by the head match)."""
    out = []
    for direct in (False, True):
        fakes = FakeBudgets(**(budgets or {}))
        service(app, fakes, FakeProducer(fail=fail))
        exchange = Exchange(app, direct=direct, heads=heads)
        writes = await exchange.send(data)
        out.append(Outcome(list(writes), exchange.transport.closed, fakes, exchange.asgi_calls))
        exchange.close()
    return out[0], out[1]


CASES = {
    "200": lambda rid: post(rid),
    "200 connection close": lambda rid: post(rid, extra=CLOSE),
    "404 forged": lambda rid: post(rid[:-4] + "AAAA"),
    "404 not a token": lambda rid: post("nonsense"),
    "422 bad flag": lambda rid: post(rid, '{"view": 2}'),
    "422 nothing set": lambda rid: post(rid, "{}"),
    "422 not json": lambda rid: post(rid, "view=1"),
    "200 with a query": lambda rid: post(rid).replace(b"/feedback ", b"/feedback?x=1 ", 1),
    "pipelined": lambda rid: post(rid) + post(rid, '{"view": 2}') + post(rid, extra=CLOSE),
    "pipelined with serve": lambda rid: (
        post(rid) + get_serve() + post(rid, '{"acquisition": 1}', extra=CLOSE)
    ),
    "serve then feedback": lambda rid: get_serve() + post(rid),
}


@pytest.mark.parametrize("heads", [True, False], ids=["head match", "httptools"])
@pytest.mark.parametrize("name", list(CASES))
async def test_both_paths_write_the_same_bytes_and_count_the_same(
    app: Starlette, name: str, heads: bool
) -> None:
    data = CASES[name](request_id(app))
    metrics = app.state.ref.metrics
    before = dict(metrics.requests)
    asgi, direct = await both(app, data, heads=heads)
    assert asgi.writes, "the ASGI path answered nothing"
    assert b"".join(direct.writes) == b"".join(asgi.writes)
    assert len(direct.writes) == len(asgi.writes)  # one write per response on both
    assert direct.closed == asgi.closed == (CLOSE.encode() in data)
    assert direct.budgets.charged == asgi.budgets.charged
    # The first request at least is answered directly; one pipelined behind a feedback in flight is queued
    # by uvicorn, as behind any request in flight, and runs as an ASGI cycle in its turn.
    assert direct.asgi_calls < asgi.asgi_calls
    if data.count(b" HTTP/1.1\r\n") == 1:
        assert direct.asgi_calls == 0
    added = {k: v - before.get(k, 0) for k, v in metrics.requests.items()}
    assert all(v % 2 == 0 for v in added.values()), added  # each path counted each request once


class _FeedSpy:
    """httptools' parser, noting every ``feed_data``: what the head match took never reaches it."""

    def __init__(self, parser: Any, fed: list[bytes]) -> None:
        self._parser = parser
        self._fed = fed

    def feed_data(self, data: bytes) -> None:
        self._fed.append(data)
        self._parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


async def test_the_head_match_answers_feedback_without_httptools(app: Starlette) -> None:
    """A feedback POST whose head and body are read at once is taken by one match of its head: accepted
    (200 when its batch is done) or refused up front (422), httptools is never fed; split across two
    reads, the same request goes to httptools."""
    service(app, FakeBudgets(), FakeProducer())
    exchange = Exchange(app, direct=True)
    fed: list[bytes] = []
    exchange.protocol.parser = _FeedSpy(exchange.protocol.parser, fed)  # type: ignore[assignment]
    writes = list(await exchange.send(post(request_id(app))))
    writes += (await exchange.send(post(request_id(app, "n2"), '{"view": 2}')))[1:]
    assert [w.split(b"\r\n", 1)[0] for w in writes] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 422 Unprocessable Entity",
    ]
    assert fed == [] and exchange.asgi_calls == 0
    data = post(request_id(app, "n3"))
    exchange.protocol.data_received(data[:-1])
    assert fed == [data[:-1]]  # the body is not all there: httptools reads it
    exchange.close()


async def test_the_answers_are_what_the_readme_says(app: Starlette) -> None:
    rid = request_id(app)
    _, direct = await both(app, post(rid) + post(rid) + post(rid, '{"view": 2}'))
    writes = direct.writes
    assert [w.split(b"\r\n", 1)[0] for w in writes] == [
        b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 422 Unprocessable Entity",
    ]  # fmt: skip
    assert writes[0].endswith(b'\r\n\r\n{"status":"Success"}')
    assert list(direct.budgets.charged.values()) == [100]  # the duplicate charged nothing


@pytest.mark.parametrize(
    ("budgets", "fail", "reason", "kept"),
    [
        ({"down": True}, None, b"budget store unavailable", False),
        ({}, MessageSizeTooLargeError(), b"event log unavailable (MessageSizeTooLargeError); nothing", False),
        ({}, NotLeaderForPartitionError(), b"(NotLeaderForPartitionError): the event may be written", True),
    ],
    ids=["redis down", "kafka refuses", "kafka gave up a batch it may have written"],
)
async def test_unavailable_is_503_with_retry_after_on_both(
    app: Starlette, budgets: dict[str, Any], fail: KafkaError | None, reason: bytes, kept: bool
) -> None:
    """Nothing is charged when Redis is down or Kafka refuses the event (the debit is refunded). A batch
    the producer gave up after a leader change may have been written before: its charge stays, for the
    client's retry to find the event in ``ad-feedback`` or publish it (``test_feedback_orphan.py``)."""
    asgi, direct = await both(app, post(request_id(app)), budgets=budgets, fail=fail)
    assert direct.writes == asgi.writes and asgi.writes[0].startswith(b"HTTP/1.1 503 ")
    assert b"\r\nretry-after: 1\r\n" in asgi.writes[0] and reason in asgi.writes[0]
    assert direct.budgets.charged == asgi.budgets.charged
    assert len(asgi.budgets.charged) == (1 if kept else 0)
    assert len(asgi.budgets.refunded) == (1 if fail is not None and not kept else 0)


async def test_not_ready_is_503_with_retry_after_on_both(app: Starlette) -> None:
    data = post(request_id(app))
    answers = []
    for direct in (False, True):
        state_of(app).feedback = None
        exchange = Exchange(app, direct=direct)
        answers.append(await exchange.send(data))
        exchange.close()
    assert answers[0] == answers[1] and answers[0][0].startswith(b"HTTP/1.1 503 ")
    assert b"\r\nretry-after: 1\r\n" in answers[0][0]


async def test_the_answer_waits_for_the_acknowledgement_and_a_later_request_waits_its_turn(
    app: Starlette,
) -> None:
    """Nothing is written before Kafka acknowledges the event; a request pipelined behind it (a serve GET)
    is not answered before it; then both are, in order."""
    producer = FakeProducer(hold=True)
    service(app, FakeBudgets(), producer)
    exchange = Exchange(app, direct=True)
    writes = await exchange.send(post(request_id(app)) + get_serve())
    assert writes == [] and producer.sent
    producer.release()
    await settle()
    assert [w.split(b"\r\n", 1)[0] for w in writes] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 422 Unprocessable Entity",
    ]
    exchange.close()


async def test_a_graceful_shutdown_lets_the_answer_out_then_closes(app: Starlette) -> None:
    answers = []
    for direct in (False, True):
        producer = FakeProducer(hold=True)
        service(app, FakeBudgets(), producer)
        exchange = Exchange(app, direct=direct)
        assert await exchange.send(post(request_id(app))) == []
        exchange.protocol.shutdown()  # what uvicorn calls on each connection when it stops
        assert not exchange.transport.closed
        producer.release()
        await settle()
        answers.append((list(exchange.transport.writes), exchange.transport.closed))
        exchange.close()
    assert answers[0] == answers[1]
    assert answers[0][1] and answers[0][0][0].endswith(b'connection: close\r\n\r\n{"status":"Success"}')


async def test_a_client_that_went_away_gets_nothing_and_its_charge_keeps_its_event(app: Starlette) -> None:
    producer = FakeProducer(hold=True)
    budgets = FakeBudgets()
    service(app, budgets, producer)
    exchange = Exchange(app, direct=True)
    await exchange.send(post(request_id(app)))
    exchange.close()  # the client leaves while its event is in flight
    producer.release()
    await settle()
    assert exchange.transport.writes == []
    assert list(budgets.charged.values()) == [100] and len(producer.sent) == 1  # charged, and published


async def test_a_late_body_gets_408(app: Starlette, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = []
    for direct in (False, True):
        service(app, FakeBudgets(), FakeProducer())
        exchange = Exchange(app, direct=direct)
        data = post(request_id(app))
        await exchange.send(data[:-5])  # the head and part of the body
        exchange.protocol._read_timed_out()  # the read deadline fires
        await settle()
        answers.append((list(exchange.transport.writes), exchange.transport.closed))
        exchange.close()
    assert answers[0] == answers[1] and answers[0][1]
    assert answers[0][0][0].startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize(
    "data",
    [
        post("RID", extra="transfer-encoding: chunked\r\n", length=False, body="")
        + b"17\r\n"
        + BODY.encode()
        + b"\r\n0\r\n\r\n",
        post("RID", length=False),
        post("RID").replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        post("RID", "x" * 5000),
        post("RID").replace(b"/ad/RID/", b"/ad/R%49D/", 1),
        post("RID", extra="expect: 100-continue\r\n"),
        post("RID", extra="content-length: 12\r\n"),
        post("RID").replace(b"/ad/RID/", b"/ad//", 1),
        post("RID").replace(b"POST", b"PUT", 1),
    ],
    ids=["chunked", "no length", "http10", "413", "escaped", "expect", "two lengths", "empty id", "put"],
)
async def test_anything_unusual_takes_the_asgi_path(app: Starlette, data: bytes) -> None:
    """The ASGI app gets the request on the direct path's connection as it does without it (none, for
    what uvicorn refuses itself), and the bytes are the same."""
    data = data.replace(b"RID", request_id(app).encode())
    asgi, direct = await both(app, data)
    assert direct.asgi_calls == asgi.asgi_calls and asgi.writes
    assert b"".join(direct.writes) == b"".join(asgi.writes) and len(direct.writes) == len(asgi.writes)


def test_the_target_is_what_the_fast_path_takes() -> None:
    length = [(b"content-length", b"20")]
    assert feedback_target(b"/ad/abc.def/feedback", length) == "abc.def"
    assert feedback_target(b"/ad/abc/feedback?x=1", length) == "abc"
    assert feedback_target(b"/ad/abc/feedback", []) is None  # no length: the ASGI path's 422
    assert feedback_target(b"/ad/abc/feedback", [(b"content-length", b"4097")]) is None
    assert feedback_target(b"/ad/a/b/feedback", length) is None
    assert feedback_target(b"/ad/user/u1/serve", length) is None
    assert feedback_target(b"/ad/abc/feedback#f", length) is None


async def test_a_real_server_answers_directly_over_keep_alive(app: Starlette) -> None:
    service(app, FakeBudgets(), FakeProducer())
    counting = CountingApp(app)
    rid = request_id(app)
    async with guarded_uvicorn(counting, access_log=False) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        heads = []
        for data in (post(rid), post(rid, '{"view": 2}')):
            writer.write(data)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            await asyncio.wait_for(reader.readexactly(length), 5)
            heads.append(head.split(b"\r\n", 1)[0])
        writer.write(post(request_id(app, "n2"), extra=CLOSE))
        last = await asyncio.wait_for(reader.read(), 5)  # the server closes after it
        writer.close()
    assert heads == [b"HTTP/1.1 200 OK", b"HTTP/1.1 422 Unprocessable Entity"]
    assert counting.requests == []  # all three answered directly
    assert last.startswith(b"HTTP/1.1 200 OK\r\n") and last.endswith(
        b'connection: close\r\n\r\n{"status":"Success"}'
    )
