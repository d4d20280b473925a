"""Pure-ASGI middleware (no ``BaseHTTPMiddleware`` on the hot path): request timing and a body-size limit."""

from __future__ import annotations

import time
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adserver.http.metrics import RequestMetrics
from adserver.http.respond import detail, send_json

MAX_BODY_BYTES: Final = 4096
#: Route label of requests no route matched (404s of arbitrary paths): one series, not one per path.
UNMATCHED: Final = "unmatched"


class TimingMiddleware:
    """Counts every HTTP request by route template and status, and times it into the route's histogram."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app raises before answering, ServerErrorMiddleware sends a 500

        async def send_timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            # The router stored the matched route in the scope (the same dict, mutated in place).
            route = scope.get("route")
            label = getattr(route, "path", UNMATCHED) if route is not None else UNMATCHED
            self.metrics.observe(label, status, time.perf_counter() - started)


class _BodyTooLargeError(Exception):
    pass


class BodyLimitMiddleware:
    """413 for request bodies over ``max_bytes``: by ``content-length`` up front, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._too_large = detail(f"Request body larger than {max_bytes} bytes.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        streamed = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await send_json(send, 400, detail("Malformed Content-Length header."))
                    return
                if int(value) > self.max_bytes:
                    await send_json(send, 413, self._too_large)
                    return
            elif name == b"transfer-encoding":
                streamed = True
        if not streamed:
            await self.app(scope, receive, send)
            return
        await self._streamed(scope, receive, send)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A chunked body: count bytes as the app reads them; answer 413 if it has not answered yet."""
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLargeError
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLargeError:
            if started:
                raise
            await send_json(send, 413, self._too_large)


MAX_TARGET_BYTES: Final = 4096
MAX_HEADER_COUNT: Final = 64
MAX_HEADER_BYTES: Final = 16 * 1024


class RequestLimitMiddleware:
    """414 for a request target (path + query) over ``MAX_TARGET_BYTES``; 431 for more than
    ``MAX_HEADER_COUNT`` headers or more than ``MAX_HEADER_BYTES`` of them. Outermost, so nothing else
    spends work on such a request; the checks are a length and one short loop."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._uri = detail(f"Request target longer than {MAX_TARGET_BYTES} bytes.")
        self._headers = detail(f"Request headers over {MAX_HEADER_COUNT} or {MAX_HEADER_BYTES} bytes.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
            if target > MAX_TARGET_BYTES:
                await send_json(send, 414, self._uri)
                return
            headers = scope["headers"]
            if len(headers) > MAX_HEADER_COUNT or sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
                await send_json(send, 431, self._headers)
                return
        await self.app(scope, receive, send)
