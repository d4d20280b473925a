"""The RSGI prototype measured by ``bench.granian_tuning`` (``bench.rsgi_serve``) answers a serve GET as
uvicorn's direct path does: same status, ``content-type``, ``retry-after`` and body (granian adds its own
``server``, ``date`` and ``content-length``), one response call, and the rest through the ASGI app."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from starlette.applications import Starlette

import adserver.token
from bench.rsgi_serve import RsgiServe
from tests.adserver.test_direct_serve import app, exchange, get  # noqa: F401  (app: the fixture)


class Headers:
    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def items(self) -> list[tuple[str, str]]:
        return self._items


class Scope:
    """An RSGI scope as granian builds it: the path decoded, the query string as sent."""

    def __init__(self, method: str, target: str, headers: list[tuple[str, str]]) -> None:
        self.proto = "http"
        self.http_version = "1.1"
        self.method = method
        self.path, _, self.query_string = target.partition("?")
        self.scheme = "http"
        self.client = "127.0.0.1:40000"
        self.server = "127.0.0.1:8000"
        self.headers = Headers(headers)


class Protocol:
    """What an RSGI app answers: each ``response_bytes`` call."""

    def __init__(self) -> None:
        self.responses: list[tuple[int, list[tuple[str, str]], bytes]] = []

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration

    async def client_disconnect(self) -> None:
        raise AssertionError("not awaited in these tests")

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.responses.append((status, headers, body))

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Any:
        raise AssertionError("a serve answer is one response_bytes call")


def parsed(raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """uvicorn's response as (status, headers without date/server/content-length, body)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
    kept = [(k, v) for k, v in headers if k not in ("date", "server", "content-length")]
    return int(lines[0].split()[1]), kept, body


async def rsgi_answer(
    asgi_app: Starlette, method: str, target: str
) -> tuple[int, list[tuple[str, str]], bytes]:
    asgi_app.state.direct_serve.serve._counter = itertools.count()  # the nonces exchange() uses
    adserver.token._NONCES[:] = [bytes(adserver.token.NONCE_BYTES)] * 8
    protocol = Protocol()
    await RsgiServe(asgi_app).__rsgi__(Scope(method, target, [("host", "x")]), protocol)
    assert len(protocol.responses) == 1
    status, headers, body = protocol.responses[0]
    return status, [(k, v) for k, v in headers if k != "content-length"], body


@pytest.mark.parametrize(
    "query", ["device_type=iPhone", "device_type=Windows+Computer", "age=x", "device_type=Macbook"]
)
async def test_serve_answers_as_the_direct_path(app: Starlette, query: str) -> None:  # noqa: F811
    writes, _ = await exchange(app, get(query), direct=True)
    assert await rsgi_answer(app, "GET", f"/ad/user/u1/serve?{query}") == parsed(b"".join(writes))


async def test_other_routes_go_through_the_asgi_app(app: Starlette) -> None:  # noqa: F811
    status, headers, body = await rsgi_answer(app, "GET", "/healthz")
    assert status == 200 and ("content-type", "application/json") in headers and body
