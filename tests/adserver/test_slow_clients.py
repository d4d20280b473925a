"""Slow clients (slowloris) against uvicorn running ``GuardedHttpToolsProtocol`` on a real socket: a
connection that sends nothing, a head sent a byte at a time, and a body that never finishes are all
answered 408 and closed within the deadline, while a prompt keep-alive client is served as usual."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from starlette.types import Receive, Scope, Send

from adserver.http import protocol
from tests.adserver.serving import guarded_uvicorn

TIMEOUT_S = 0.5
BODY_READS: list[str] = []


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, then answers with its length; records whether it saw a disconnect."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            BODY_READS.append("disconnect")
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    BODY_READS.append(f"read {size}")
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    monkeypatch.setattr(protocol, "client_timeout_s", lambda: TIMEOUT_S)
    BODY_READS.clear()
    async with guarded_uvicorn(echo_app, timeout_keep_alive=5) as port:
        yield port


async def read_until_closed(reader: asyncio.StreamReader, limit_s: float = 5.0) -> bytes:
    return await asyncio.wait_for(reader.read(), limit_s)


async def test_a_connection_that_sends_nothing_is_closed_with_408(server: int) -> None:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    answer = await read_until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert answer.endswith(b'{"detail":"Request not received in time."}')
    assert TIMEOUT_S * 0.8 <= time.monotonic() - started < TIMEOUT_S * 4
    writer.close()


async def test_a_head_trickled_a_byte_at_a_time_is_cut_off(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    head = b"GET /ad/user/u1/serve HTTP/1.1\r\nhost: x\r\n" + b"x-pad: " + b"a" * 200
    started = time.monotonic()
    answered = asyncio.create_task(reader.read())
    for byte in head:  # each byte well inside the deadline: only a whole-request deadline stops this
        if answered.done():
            break
        with contextlib.suppress(ConnectionError):
            writer.write(bytes([byte]))
            await writer.drain()
        await asyncio.sleep(TIMEOUT_S / 10)
    answer = await asyncio.wait_for(answered, 5)
    closed_after = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert closed_after < TIMEOUT_S * 4
    assert BODY_READS == []  # the app never saw the request
    writer.close()


async def test_a_body_that_never_finishes_gets_408_and_the_app_sees_a_disconnect(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b'POST /ad/x/feedback HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"view"')
    await writer.drain()
    answer = await read_until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 408 ")
    for _ in range(100):
        if BODY_READS:
            break
        await asyncio.sleep(0.01)
    assert BODY_READS == ["disconnect"]
    writer.close()


async def test_prompt_keep_alive_requests_are_served_across_idle_gaps(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    for _ in range(3):
        writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 2)
        assert status.startswith(b"HTTP/1.1 200 ")
        # Idle between requests for longer than the read deadline: only keep-alive governs idleness.
        await asyncio.sleep(TIMEOUT_S * 1.5)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert await reader.readexactly(1) == b"3"
    writer.close()
    assert BODY_READS == ["read 3"] * 3
