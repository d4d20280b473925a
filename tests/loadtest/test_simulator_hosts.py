"""The simulator over several ad-server hosts: a 503 or a refused connection is retried on the next host,
the same path (a feedback keeps its request_id); the load in a window (a fault's) from the timeline."""

from __future__ import annotations

import asyncio
import socket

import pytest

from loadtest.http_client import SimClient
from loadtest.simulator import SimSummary, Simulator, SimUser
from tests.loadtest.fake_http import body_length


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _answering(status: bytes) -> tuple[asyncio.Server, int, list[str]]:
    targets: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        targets.append(head.split(" ")[1])
        await reader.readexactly(body_length(head))
        writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1]), targets


@pytest.mark.parametrize("failing", ["refused", "503"])
async def test_a_failed_host_is_retried_on_the_other_with_the_same_path(failing: str) -> None:
    good, good_port, good_targets = await _answering(b"200 OK")
    bad_port = _closed_port()
    bad = None
    if failing == "503":
        bad, bad_port, _ = await _answering(b"503 Service Unavailable")
    hosts = [f"http://127.0.0.1:{bad_port}", f"http://127.0.0.1:{good_port}"]
    sim = Simulator([SimUser("u1", 30, "iPhone")], ad_url=hosts[0], rate=1, hosts=hosts, retry_for_s=5)
    try:
        async with SimClient(max_connections=4, timeout_s=5) as client:
            for _ in range(8):  # each starts on a random host: some on the bad one first
                reply = await sim._send(client, "POST", hosts[0], "/ad/tok-1/feedback", json={"view": 1})
                assert reply.status_code == 200
    finally:
        for server in (good, bad):
            if server is not None:
                server.close()
    assert good_targets == ["/ad/tok-1/feedback"] * 8
    assert 1 <= sim.summary.retries <= 8


def test_the_window_counts_what_ended_well_in_it_and_the_errors_of_what_began_in_it() -> None:
    s = SimSummary()
    s.timeline = [(0.5, 1.5, True), (1.0, 1.2, True), (1.1, 3.5, False), (2.5, 2.6, True), (3.0, 4.5, True)]
    rate, errors = s.window(1.0, 3.0)  # ended well in it: 1.2, 1.5, 2.6; began in it: 3, one failed
    assert rate == pytest.approx(1.5)
    assert errors == pytest.approx(1 / 3)
    assert s.window(10.0, 11.0) == (0.0, 0.0)
