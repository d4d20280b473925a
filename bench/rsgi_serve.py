"""A prototype measured by ``bench.granian_tuning --serve granian-rsgi-serve``: the ad server under granian's
RSGI interface, a plain serve GET answered by one RSGI call (issue 18).

The serve GET takes the same decision as uvicorn's direct path (``adserver.http.direct.target``, then the
app's ``DirectServe``: the same endpoint, metrics and ``after``); every other request goes to the
Starlette app through a small RSGI-to-ASGI adapter (body streamed chunk by chunk, so the app's 413 still
comes early; a body not received within ``ADP_CLIENT_TIMEOUT_S`` gets 408 and ``connection: close``).
The app's lifespan runs in ``__rsgi_init__`` / ``__rsgi_del__`` (granian's own lifespan driver).

Not a server of ``adplatform serve``: granian closes a connection whose request head is late without
answering 408, and never times out a connection that sends nothing (measured, BENCHMARKS.md
2026-12-05), so it cannot keep the README's slow-client guarantees; this module exists so the
comparison can be re-run.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final, Protocol

from adserver.http.direct import DirectServe, direct_of, target
from adserver.http.fastpath import SERVE_ROUTE
from adserver.http.protocol import client_timeout_s
from adserver.serve import CapWait

_JSON: Final = ("content-type", "application/json")
_BODY_408: Final = b'{"detail":"Request not received in time."}'
_HEADERS_408: Final = [_JSON, ("connection", "close")]


class _Headers(Protocol):
    def items(self) -> list[tuple[str, str]]: ...


class _Scope(Protocol):
    proto: str
    http_version: str
    method: str
    path: str
    query_string: str
    scheme: str
    client: str
    server: str

    @property
    def headers(self) -> _Headers: ...


class _Stream(Protocol):
    async def send_bytes(self, data: bytes) -> None: ...


class _HTTPProtocol(Protocol):
    def __aiter__(self) -> Any: ...
    async def client_disconnect(self) -> None: ...
    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...
    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> _Stream: ...


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port or 0)


class _Exchange:
    """One request through the ASGI app: ``receive`` streams the body, ``send`` writes the answer."""

    __slots__ = ("_body", "_deadline", "_done", "_headers", "_protocol", "_status", "_stream", "timed_out")

    def __init__(self, protocol: _HTTPProtocol) -> None:
        self._protocol = protocol
        self._body = protocol.__aiter__()
        self._done = False
        self._deadline = time.monotonic() + client_timeout_s()
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._stream: _Stream | None = None
        self.timed_out = False

    async def receive(self) -> dict[str, Any]:
        if self._done:
            await self._protocol.client_disconnect()
            return {"type": "http.disconnect"}
        try:
            async with asyncio.timeout_at(
                asyncio.get_running_loop().time() + self._deadline - time.monotonic()
            ):
                chunk: bytes = await self._body.__anext__()
        except StopAsyncIteration:
            self._done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        except TimeoutError:
            self._done = self.timed_out = True
            if not self._status:
                self._status = 408
                self._protocol.response_bytes(408, _HEADERS_408, _BODY_408)
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(self, message: dict[str, Any]) -> None:
        if self.timed_out:
            return
        if message["type"] == "http.response.start":
            self._status = message["status"]
            self._headers = [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())
            ]
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self._stream is None and not more:
            self._protocol.response_bytes(self._status, self._headers, body)  # one write
            return
        if self._stream is None:
            self._stream = self._protocol.response_stream(self._status, self._headers)
        if body:
            await self._stream.send_bytes(body)


class RsgiServe:
    """``__rsgi__`` over the ad-server ASGI app: serve GETs answered directly, the rest through ASGI."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._direct: DirectServe | None = direct_of(app)
        self._lifespan: Any = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        from granian.asgi import LifespanProtocol

        self._lifespan = LifespanProtocol(self.app)  # type: ignore[no-untyped-call]  # granian's, unannotated
        loop.run_until_complete(self._lifespan.startup())
        if self._lifespan.interrupt:
            raise RuntimeError("the ad server's lifespan failed to start") from self._lifespan.exc

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._lifespan is not None:
            loop.run_until_complete(self._lifespan.shutdown())

    async def __rsgi__(self, scope: _Scope, protocol: _HTTPProtocol) -> None:
        direct = self._direct
        if direct is not None and scope.method == "GET" and scope.http_version == "1.1":
            path, query = scope.path.encode(), scope.query_string.encode()
            found = target(path + b"?" + query if query else path, [
                (k.encode(), v.encode()) for k, v in scope.headers.items()
            ])  # fmt: skip
            if found is not None:
                await self._serve(direct, found[0], found[1], protocol)
                return
        await self._asgi(scope, protocol)

    async def _serve(self, direct: DirectServe, user_id: str, query: bytes, protocol: _HTTPProtocol) -> None:
        started = time.perf_counter()
        status = 500
        try:
            reply = direct.serve.begin(user_id, query)
            if isinstance(reply, CapWait):
                reply = await direct.serve.finish(reply)
            status = reply.status
            headers = (
                [_JSON] if reply.retry_after_s is None else [_JSON, ("retry-after", str(reply.retry_after_s))]
            )
            protocol.response_bytes(status, headers, reply.body)
        finally:
            direct.metrics.observe(SERVE_ROUTE, status, time.perf_counter() - started)
        direct.serve.after(reply)

    async def _asgi(self, scope: _Scope, protocol: _HTTPProtocol) -> None:
        path = scope.path
        asgi_scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": scope.http_version if scope.http_version != "1" else "1.0",
            "method": scope.method,
            "scheme": scope.scheme,
            "path": path,
            "raw_path": path.encode(),
            "query_string": scope.query_string.encode(),
            "root_path": "",
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()],
            "client": _address(scope.client),
            "server": _address(scope.server),
            "state": dict(self._lifespan.state) if self._lifespan is not None else {},
        }
        exchange = _Exchange(protocol)
        await self.app(asgi_scope, exchange.receive, exchange.send)


def _app() -> RsgiServe:
    from adserver.app import app

    return RsgiServe(app)


app = _app()
