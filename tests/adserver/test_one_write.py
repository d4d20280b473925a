"""One write per response: ``GuardedHttpToolsProtocol`` holds a response's head and writes it with the
first body bytes (one send(2) instead of two), without changing what any client sees: HEAD, ``Expect:
100-continue``, streamed bodies, pipelined requests and an app that fails after starting its response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.types import Receive, Scope, Send

from adserver.http.protocol import _HeadWithBody
from tests.adserver.serving import Recorder, guarded_uvicorn

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_the_head_goes_out_with_the_body() -> None:
    t = Recorder()
    w = _HeadWithBody(t)  # type: ignore[arg-type]
    w.write(HEAD)
    assert t.writes == []
    w.write(b"ok")
    assert t.writes == [HEAD + b"ok"]


def test_a_100_continue_goes_out_at_once_and_later_chunks_as_they_come() -> None:
    t = Recorder()
    w = _HeadWithBody(t)  # type: ignore[arg-type]
    w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert t.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    w.write(HEAD)
    w.write(b"o")
    w.write(b"k")
    assert t.writes[1:] == [HEAD + b"o", b"k"]


def test_writelines_keeps_the_order_and_other_calls_reach_the_transport() -> None:
    t = Recorder()
    w = _HeadWithBody(t)  # type: ignore[arg-type]
    w.write(HEAD)
    w.writelines([b"o", b"k"])
    assert t.writes == [HEAD + b"ok"] and w.writes is t.writes  # an attribute it does not define


def test_closing_writes_a_held_head_first() -> None:
    t = Recorder()
    w = _HeadWithBody(t)  # type: ignore[arg-type]
    w.write(HEAD)
    w.close()
    assert t.writes == [HEAD] and t.closed and w.is_closing()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    path = scope["path"]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})  # chunked
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b"second"})
        return
    body = f"{path} {size}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
    if path == "/fail":
        raise RuntimeError("the app fails after starting its response")
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def server() -> AsyncIterator[int]:
    async with guarded_uvicorn(app, log_level="critical") as port:
        yield port


async def _exchange(port: int, request: bytes, *, limit_s: float = 5) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(), limit_s)
    finally:
        writer.close()


async def test_head_requests_get_their_head(server: int) -> None:
    answer = await _exchange(server, b"HEAD /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n")
    assert b"content-length: 4" in answer


async def test_expect_100_continue_is_answered_before_the_body_is_sent(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"POST /c HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nexpect: 100-continue\r\n"
                 b"connection: close\r\n\r\n")  # fmt: skip
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"abc")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"/c 3")


async def test_a_streamed_body_is_not_held_back(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    early = await asyncio.wait_for(reader.readuntil(b"first\r\n"), 0.25)  # before "second" exists
    assert early.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in early
    rest = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert rest == b"6\r\nsecond\r\n0\r\n\r\n"


async def test_pipelined_requests_get_their_own_answers_in_order(server: int) -> None:
    answer = await _exchange(
        server,
        b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n"
        b"POST /two HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello"
        b"GET /three HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    bodies = [part.rsplit(b"\r\n\r\n", 1)[-1] for part in answer.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"/one 0", b"/two 5", b"/three 0"]


async def test_an_app_failing_after_its_head_closes_the_connection_after_the_head(server: int) -> None:
    answer = await _exchange(server, b"GET /fail HTTP/1.1\r\nhost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n")
