"""The load tools' HTTP client against a small asyncio server of our own on a free loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from adserver.http.direct import plain_feedback, plain_serve
from loadtest.http_client import SimClient, encode_request
from tests.loadtest.fake_http import body_length


class Server:
    """Answers each request with its method, target and body; closes a connection after ``close_after``
    answers (an idle timeout, as uvicorn's), or hangs without answering a target containing ``hang``."""

    def __init__(self, close_after: int = 1000) -> None:
        self.close_after = close_after
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for _ in range(self.close_after):
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                method, target, _ = head.split("\r\n")[0].split(" ")
                body = await reader.readexactly(body_length(head))
                if "hang" in target:
                    await asyncio.sleep(30)
                answer = f"{method} {target} ".encode() + body
                status = b"404 Not Found" if "missing" in target else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: %d\r\n\r\n" % len(answer) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with Server() as s:
        yield s


async def test_get_with_a_query_and_post_with_json_share_one_kept_alive_connection(server: Server) -> None:
    base = f"http://127.0.0.1:{server.port}"
    async with SimClient() as client:
        got = await client.get(f"{base}/ad/user/u 1/serve", params={"city": "São Paulo", "state": "SP"})
        assert got.status_code == 200
        assert got.content == b"GET /ad/user/u%201/serve?city=S%C3%A3o+Paulo&state=SP "
        posted = await client.post(f"{base}/ad/r1/feedback", json={"view": 1})
        assert (posted.status_code, posted.content) == (200, b'POST /ad/r1/feedback {"view":1}')
        missing = await client.get(f"{base}/missing")
        assert missing.status_code == 404
    assert server.connections == 1


async def test_concurrent_requests_open_at_most_max_connections() -> None:
    async with Server() as server, SimClient(max_connections=3) as client:
        base = f"http://127.0.0.1:{server.port}"
        replies = await asyncio.gather(*(client.get(f"{base}/{i}") for i in range(20)))
        assert [r.content for r in replies] == [f"GET /{i} ".encode() for i in range(20)]
        assert server.connections <= 3


async def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error() -> None:
    async with Server(close_after=1) as server, SimClient() as client:
        base = f"http://127.0.0.1:{server.port}"
        for i in range(3):
            await asyncio.sleep(0.05)  # the server has closed the previous connection by now
            assert (await client.get(f"{base}/{i}")).content == f"GET /{i} ".encode()
        assert server.connections == 3


async def test_errors_are_httpx_transport_errors() -> None:
    async with Server() as server:
        port = server.port
        async with SimClient(timeout_s=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"http://127.0.0.1:{port}/hang")
            assert (await client.get(f"http://127.0.0.1:{port}/after")).status_code == 200
    async with SimClient() as client:
        with pytest.raises(httpx.ConnectError):  # nothing listens there any more
            await client.get(f"http://127.0.0.1:{port}/")


def test_the_simulators_requests_take_the_ad_servers_plain_paths() -> None:
    """A serve GET without a body sends no content-length (as a browser), so the ad server answers it from
    one match of its head as it would a real client's; the feedback POST has its length and JSON type."""
    host, port, get = encode_request("GET", "http://127.0.0.1:8000/ad/u1/serve", params={"city": "Pune"})
    assert (host, port) == ("127.0.0.1", 8000)
    assert b"content-length" not in get.lower()
    served = encode_request("GET", "http://127.0.0.1:8000/ad/user/u1/serve", params={"city": "Pune"})[2]
    assert plain_serve(served, 0) is not None, served
    posted = encode_request("POST", "http://127.0.0.1:8000/ad/r1/feedback", json={"view": 1})[2]
    assert plain_feedback(posted, 0) is not None, posted
    assert b"content-length: 0\r\n" in encode_request("POST", "http://127.0.0.1:8000/x")[2]  # POST: always
