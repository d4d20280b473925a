"""The serve route answered directly by ``GuardedHttpToolsProtocol`` (``adserver.http.direct``) writes the
same bytes, counts the same metrics and serve stats, and handles the connection as the ASGI path does:
every request is sent twice, once to a protocol with its direct path and once without, over a recording
transport, with the token's inputs (time, nonces) fixed so both request_ids are the same."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import httptools
import pytest
import uvicorn
from starlette.applications import Starlette
from uvicorn.server import ServerState as UvicornState

import adserver.token
from adplatform.config import load_config
from adserver.app import create_app
from adserver.http.direct import MAX_DEFERRED, DirectServe, target
from adserver.http.protocol import GuardedHttpToolsProtocol
from adserver.lifespan import build_state
from adserver.state import ServerState, StateRef
from index.fcap import FrequencyCap
from tests.adserver.serving import CountingApp, Recorder, guarded_uvicorn
from tests.index.index_factory import NOW_S, campaign

DEFAULTS = [(b"date", b"Sat, 05 Dec 2026 08:00:00 GMT"), (b"server", b"uvicorn")]
SERVE = "/ad/user/{user_id}/serve"


class Transport(Recorder):
    """What a protocol writes, and whether it closed the connection, with the socket's details."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Starlette:
    """The ad-server app with a ready state (no lifespan, nothing connected): one campaign for iPhones."""
    monkeypatch.setattr(time, "time", lambda: float(NOW_S))  # the token's issued_ms
    app = create_app()
    ref: StateRef = app.state.ref
    state = build_state(load_config({}))
    state.index.apply(campaign(campaign_id="only", text="an ad", target_device="iPhone"))
    # Capped: its auction waits for the cap store (not connected here: skipped, no fill), in a cycle.
    capped = campaign(
        campaign_id="capped", target_device="Macbook", frequency_cap=FrequencyCap(count=1, window_s=60)
    )
    state.index.apply(capped)
    state.refresher.ready.set()
    state.profiles.attempted = True
    ref.state = state
    return app


def state_of(app: Starlette) -> ServerState:
    state = app.state.ref.state
    assert isinstance(state, ServerState)
    return state


def connect(app: Starlette) -> tuple[GuardedHttpToolsProtocol, Transport]:
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning", proxy_headers=False)
    server_state = UvicornState()
    server_state.default_headers = DEFAULTS
    protocol = GuardedHttpToolsProtocol(config, server_state, {}, asyncio.get_running_loop())
    transport = Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]  # the calls a protocol makes
    return protocol, transport


async def exchange(
    app: Starlette,
    data: bytes,
    *,
    direct: bool,
    all_direct: bool = False,
    heads: bool = True,
    chunk: int | None = None,
    seen: list[str] | None = None,
) -> tuple[list[bytes], bool]:
    """The writes of one connection that receives ``data`` (in reads of ``chunk`` bytes, if given), and
    whether it was closed. With ``all_direct``, the ASGI app must see none of its serve requests; without
    ``heads``, every request goes through httptools' callbacks (no head match). ``seen``, if given, gets
    the requests the ASGI app saw (``METHOD path?query``)."""
    direct_serve: DirectServe = app.state.direct_serve
    direct_serve.serve._counter = itertools.count()  # the same nonces on both paths
    adserver.token._NONCES[:] = [bytes(adserver.token.NONCE_BYTES)] * 8  # and the same AEAD nonces
    protocol, transport = connect(app)
    if not direct:
        protocol._direct = None
    protocol._heads = protocol._heads and heads
    seen = [] if seen is None else seen
    inner = protocol.app

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        seen.append(f"{scope['method']} {scope['path']}?{scope['query_string'].decode()}")
        await inner(scope, receive, send)

    protocol.app = watched
    step = chunk or len(data)
    for start in range(0, len(data), step):
        protocol.data_received(data[start : start + step])
    for _ in range(20):  # the ASGI path answers in tasks
        await asyncio.sleep(0)
    closed = transport.closed
    if all_direct:
        assert not [s for s in seen if s.startswith("GET /ad/user/u1/serve?")], seen  # all answered directly
    protocol.connection_lost(None)
    return transport.writes, closed


def get(query: str, *, user: str = "u1", extra: str = "") -> bytes:
    return f"GET {SERVE.format(user_id=user)}?{query} HTTP/1.1\r\nhost: x\r\n{extra}\r\n".encode()


CLOSE = "connection: close\r\n"
CASES = {
    "200": get("device_type=iPhone"),
    "404 no fill": get("device_type=Windows+Computer"),
    "422 bad params": get("age=x"),
    "200 connection close": get("device_type=iPhone", extra=CLOSE),
    "pipelined": get("device_type=iPhone") + get("age=x") + get("device_type=Windows+Computer", extra=CLOSE),
    # The capped campaign's cap check runs in an ASGI cycle; the requests behind it wait their turn.
    "capped, then pipelined": get("device_type=Macbook")
    + get("device_type=iPhone")
    + get("age=x", extra=CLOSE),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_both_paths_write_the_same_bytes_and_count_the_same(app: Starlette, name: str) -> None:
    state = state_of(app)
    metrics = app.state.ref.metrics
    asgi, asgi_closed = await exchange(app, CASES[name], direct=False)
    stats = (state.stats.served, state.stats.unfilled, state.stats.rejected)
    counted = dict(metrics.requests)
    direct, direct_closed = await exchange(app, CASES[name], direct=True, all_direct="capped" not in name)
    assert b"".join(direct) == b"".join(asgi)
    assert len(direct) == len(asgi)  # one write per response on both
    assert direct_closed == asgi_closed == (CLOSE.encode() in CASES[name])
    assert (state.stats.served, state.stats.unfilled, state.stats.rejected) == tuple(2 * n for n in stats)
    assert {k: 2 * v for k, v in counted.items()} == metrics.requests


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("chunk", [None, 1, 7, 64])
async def test_the_head_match_answers_as_httptools_direct_path(
    app: Starlette, name: str, chunk: int | None
) -> None:
    """Whole, or split anywhere across reads (a split head goes to httptools), the same bytes and the
    same closing as with every request read by httptools' callbacks."""
    parsed, parsed_closed = await exchange(app, CASES[name], direct=True, heads=False)
    matched, matched_closed = await exchange(app, CASES[name], direct=True, chunk=chunk)
    assert matched == parsed and matched_closed == parsed_closed


async def test_the_head_match_answers_requests_whole_without_httptools(
    app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    began: list[int] = []
    begin = GuardedHttpToolsProtocol.on_message_begin

    def counted(self: GuardedHttpToolsProtocol) -> None:
        began.append(1)
        begin(self)

    monkeypatch.setattr(GuardedHttpToolsProtocol, "on_message_begin", counted)
    writes, closed = await exchange(app, get("device_type=iPhone") * 3 + get("age=x"), direct=True)
    assert [w.split(b"\r\n", 1)[0] for w in writes] == [b"HTTP/1.1 200 OK"] * 3 + [
        b"HTTP/1.1 422 Unprocessable Entity"
    ]
    assert began == [] and not closed
    # A request the match leaves to httptools, then plain ones behind it: httptools reads them all.
    writes, closed = await exchange(app, get("age=x", extra=CLOSE) + get("device_type=iPhone"), direct=True)
    assert len(began) == 1 and len(writes) == 1 and closed


async def test_the_answers_are_what_the_readme_says(app: Starlette) -> None:
    writes, _ = await exchange(app, CASES["pipelined"], direct=True)
    assert [w.split(b"\r\n", 1)[0] for w in writes] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 422 Unprocessable Entity",
        b"HTTP/1.1 404 Not Found",
    ]
    assert writes[0].split(b"\r\n\r\n", 1)[1].startswith(b'{"text":"an ad","request_id":"')
    assert writes[2].endswith(b'\r\nconnection: close\r\n\r\n{"detail":"No eligible ads found."}')


async def test_not_ready_is_503_with_retry_after_on_both(app: Starlette) -> None:
    state_of(app).refresher.ready.clear()
    asgi, _ = await exchange(app, CASES["200"], direct=False)
    direct, _ = await exchange(app, CASES["200"], direct=True)
    assert direct == asgi and asgi[0].startswith(b"HTTP/1.1 503 ")
    assert b"\r\nretry-after: 1\r\n" in asgi[0]
    app.state.ref.state = None  # before the lifespan has built the state
    assert (await exchange(app, CASES["200"], direct=True))[0] == (
        await exchange(app, CASES["200"], direct=False)
    )[0]


async def test_served_ads_are_published_from_both_paths(app: Starlette) -> None:
    publisher = state_of(app).publisher
    offered: list[str] = []
    publisher.offer = lambda item: offered.append(item.campaign_id)  # type: ignore[method-assign]
    await exchange(app, CASES["200"], direct=False)
    await exchange(app, CASES["200"], direct=True)
    assert offered == ["only", "only"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"HEAD /ad/user/u1/serve?device_type=iPhone HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /ad/user/u1/serve?device_type=iPhone HTTP/1.0\r\nhost: x\r\n\r\n",
        b"GET /ad/user/u%31/serve?device_type=iPhone HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /ad/user/u1/serve HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
        b"GET /ad/user/u1/serve?" + b"a" * 5000 + b" HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /ad/user/u1/serve HTTP/1.1\r\n" + b"".join(b"x-%d: y\r\n" % i for i in range(70)) + b"\r\n",
        b"GET /ad/user//serve HTTP/1.1\r\nhost: x\r\n\r\n",
    ],
    ids=["head", "http10", "escaped", "body", "414", "431", "empty user"],
)
async def test_anything_unusual_takes_the_asgi_path(app: Starlette, request_bytes: bytes) -> None:
    """The ASGI app sees the request on the direct path's connection as it does without it (none of
    them, for the heads uvicorn refuses itself), and the bytes are the same."""
    asgi_seen: list[str] = []
    direct_seen: list[str] = []
    asgi, _ = await exchange(app, request_bytes, direct=False, seen=asgi_seen)
    direct, _ = await exchange(app, request_bytes, direct=True, seen=direct_seen)
    assert direct_seen == asgi_seen and asgi
    assert b"".join(direct) == b"".join(asgi) and len(direct) == len(asgi)


@pytest.mark.parametrize(
    "url",
    [
        b"/ad/user/u1/serve",
        b"/ad/user/u1/serve?",
        b"/ad/user/u1/serve?a=1&b=2",
        b"/ad/user/u1/serve?a=1?b=%2F",
    ],
)
def test_the_target_is_split_as_httptools_splits_it(url: bytes) -> None:
    parsed = httptools.parse_url(url)
    assert target(url, []) == (parsed.path[len(b"/ad/user/") : -len(b"/serve")].decode(), parsed.query or b"")


async def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(app: Starlette) -> None:
    """One idle timer per connection, moved by each answer: a connection in use stays open past the
    keep-alive timeout, an idle one is closed after it."""
    async with guarded_uvicorn(app, access_log=False, timeout_keep_alive=1) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        while time.monotonic() - started < 1.6:  # requests 0.4 s apart, for longer than the timeout
            writer.write(get("device_type=iPhone"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            await reader.readexactly(int(head.split(b"content-length: ")[1].split(b"\r\n")[0]))
            await asyncio.sleep(0.4)
        idle = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        assert 0.3 <= time.monotonic() - idle < 4
        writer.close()


async def test_a_real_server_answers_directly_over_keep_alive(app: Starlette) -> None:
    counting = CountingApp(app)
    served = state_of(app).stats.served
    statuses: list[bytes] = []
    async with guarded_uvicorn(counting, access_log=False) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for query in ("device_type=iPhone", "age=x"):
            writer.write(get(query))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            statuses.append(head.split(b"\r\n", 1)[0])
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            await asyncio.wait_for(reader.readexactly(length), 5)
        writer.write(get("device_type=iPhone", extra=CLOSE))
        last = await asyncio.wait_for(reader.read(), 5)  # the server closes after it
        writer.close()
    assert counting.requests == [] and state_of(app).stats.served == served + 2  # all three directly
    assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 422 Unprocessable Entity"]
    assert last.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nconnection: close\r\n" in last


async def test_after_a_failing_request_the_head_match_answers_nothing_more(
    app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500 closes the connection: the requests read behind it are not answered."""
    # The profile lookup of the endpoint's first step (the endpoint and the parser are compiled, so
    # neither can be patched; the profile table is not).
    profiles = state_of(app).profiles
    lookup = profiles.get

    def failing(user_id: str) -> Any:
        if user_id == "boom":
            raise RuntimeError("a bug")
        return lookup(user_id)

    monkeypatch.setattr(profiles, "get", failing)
    data = get("device_type=iPhone") + get("device_type=iPhone", user="boom") + get("device_type=iPhone")
    writes, closed = await exchange(app, data, direct=True)
    assert [w.split(b"\r\n", 1)[0] for w in writes] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 500 Internal Server Error",
    ]
    assert closed


async def test_the_answers_of_one_turn_are_written_together_in_order(app: Starlette) -> None:
    """Answers read by the head match are written when the turn's reads are done: each one write, in
    order per connection; then the connection is idle as after any answer."""
    (first, one), (second, two) = connect(app), connect(app)
    first.data_received(get("device_type=iPhone") + get("age=x"))
    second.data_received(get("device_type=Windows+Computer"))
    assert one.writes == two.writes == []  # not yet: the turn is not over
    await asyncio.sleep(0)
    assert [w.split(b"\r\n", 1)[0] for w in one.writes] == [
        b"HTTP/1.1 200 OK", b"HTTP/1.1 422 Unprocessable Entity"
    ]  # fmt: skip
    assert [w.split(b"\r\n", 1)[0] for w in two.writes] == [b"HTTP/1.1 404 Not Found"]
    assert not one.closed and not two.closed
    for protocol in (first, second):
        protocol.connection_lost(None)


@pytest.mark.parametrize(
    "after",
    [
        b"GET /ad/user/u1/serve HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",  # httptools' direct path
        b"BREW /pot HTTP/1.1\r\n\r\n",  # uvicorn's 400, then close
    ],
    ids=["direct via httptools", "400"],
)
async def test_what_httptools_answers_is_written_after_the_deferred_answers(
    app: Starlette, after: bytes
) -> None:
    protocol, transport = connect(app)
    protocol.data_received(get("device_type=iPhone") + after)
    await asyncio.sleep(0)
    statuses = [w.split(b"\r\n", 1)[0] for w in transport.writes]
    assert statuses[0] == b"HTTP/1.1 200 OK" and len(statuses) == 2 and transport.closed
    protocol.connection_lost(None)


async def test_a_graceful_shutdown_writes_the_deferred_answers_first(app: Starlette) -> None:
    protocol, transport = connect(app)
    protocol.data_received(get("device_type=iPhone"))
    protocol.shutdown()  # the connection is idle (its answer given): uvicorn closes it
    assert [w.split(b"\r\n", 1)[0] for w in transport.writes] == [b"HTTP/1.1 200 OK"] and transport.closed
    await asyncio.sleep(0)
    assert len(transport.writes) == 1
    protocol.connection_lost(None)


async def test_answers_past_the_bound_are_written_at_once(app: Starlette) -> None:
    protocol, transport = connect(app)
    protocol.data_received(get("device_type=iPhone") * (MAX_DEFERRED + 10))
    assert len(transport.writes) == MAX_DEFERRED  # the bound reached: those written at once
    await asyncio.sleep(0)
    assert len(transport.writes) == MAX_DEFERRED + 10
    protocol.connection_lost(None)
