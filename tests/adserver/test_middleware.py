"""The pure-ASGI middleware on a small app: request-size limit and per-route timing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adserver.http.metrics import RequestMetrics
from adserver.http.middleware import BodyLimitMiddleware, TimingMiddleware


async def echo_length(request: Request) -> Response:
    return JSONResponse({"bytes": len(await request.body())})


async def boom(request: Request) -> Response:
    raise RuntimeError("boom")


def make_app(metrics: RequestMetrics) -> Starlette:
    return Starlette(
        routes=[Route("/echo/{n}", echo_length, methods=["POST"]), Route("/boom", boom)],
        middleware=[Middleware(TimingMiddleware, metrics=metrics), Middleware(BodyLimitMiddleware)],
    )


def client(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_body_limit() -> None:
    metrics = RequestMetrics()
    async with client(make_app(metrics)) as c:
        assert (await c.post("/echo/1", content=b"x" * 4096)).json() == {"bytes": 4096}
        too_big = await c.post("/echo/1", content=b"x" * 4097)
        assert too_big.status_code == 413 and too_big.json() == {
            "detail": "Request body larger than 4096 bytes."
        }
        streamed = await c.post("/echo/1", content=chunks(b"x" * 3000, b"x" * 3000))
        assert streamed.status_code == 413
        assert (await c.post("/echo/1", content=chunks(b"x" * 100, b"x" * 100))).json() == {"bytes": 200}
        bad = await c.post("/echo/1", content=b"{}", headers={"content-length": "2x"})
        assert bad.status_code == 400


async def test_timing_labels_by_route_template() -> None:
    metrics = RequestMetrics()
    async with client(make_app(metrics)) as c:
        await c.post("/echo/1", content=b"a")
        await c.post("/echo/2", content=b"b")
        await c.get("/echo/3")  # 405
        await c.get("/no/such/path/1")
        await c.get("/no/such/path/2")
        assert (await c.get("/boom")).status_code == 500
    assert metrics.requests == {
        ("/echo/{n}", 200): 2,
        ("/echo/{n}", 405): 1,
        ("unmatched", 404): 2,
        ("/boom", 500): 1,
    }
    assert metrics.latency["/echo/{n}"].count == 3
