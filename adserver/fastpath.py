"""The serve route's fast path: ``GET /ad/user/{user_id}/serve`` straight to its endpoint.

The serve route is the one benchmarked at tens of thousands of requests per second per core pair, and
Starlette's generic layers (exception middleware, the router's regex walk, the request-size and timing
middleware with their send wrappers) cost about as much as the auction itself. This middleware, first
inside Starlette's ServerErrorMiddleware (which still turns a crash into a 500), recognises the path with
two string tests and calls the endpoint directly, timing it into the same metrics series the router path
uses. Anything else (other routes, HEAD, a GET carrying a body, a mounted root path) goes down the
ordinary stack, where the same endpoint is also routed, so behaviour does not depend on which path ran.
"""

from __future__ import annotations

import time
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from adserver.metrics import RequestMetrics
from adserver.serve import ServeEndpoint

SERVE_ROUTE: Final = "/ad/user/{user_id}/serve"
_PREFIX: Final = "/ad/user/"
_SUFFIX: Final = "/serve"
_BODY_HEADERS: Final = (b"content-length", b"transfer-encoding")


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, _ in headers:  # noqa: SIM110  (a generator expression here cost 3% of a worker's CPU)
        if name in _BODY_HEADERS:
            return True
    return False


class ServeFastPath:
    """Pure-ASGI middleware that answers the serve route without the router."""

    def __init__(self, app: ASGIApp, endpoint: ServeEndpoint, metrics: RequestMetrics) -> None:
        self.app = app
        self._endpoint = endpoint
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
                user_id = path[len(_PREFIX) : -len(_SUFFIX)]
                # Same match as the route's ``{user_id}`` (one non-empty segment); bodies go the long way
                # so the request-size limit sees them.
                if user_id and "/" not in user_id and not _has_body(scope["headers"]):
                    started = time.perf_counter()
                    status = 500
                    try:
                        status = await self._endpoint.respond(user_id, scope["query_string"], send)
                    finally:
                        self._metrics.observe(SERVE_ROUTE, status, time.perf_counter() - started)
                    return
        await self.app(scope, receive, send)
