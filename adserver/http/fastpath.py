"""The hot routes' fast path: ``GET /ad/user/{user_id}/serve`` and ``POST /ad/{request_id}/feedback``
straight to their endpoints.

These two routes are benchmarked at thousands to tens of thousands of requests per second on two cores,
and Starlette's generic layers (exception middleware, the router's regex walk, the request-size and
timing middleware with their send wrappers) cost about as much as the serve auction itself. This
middleware, first inside Starlette's ServerErrorMiddleware (which still turns a crash into a 500),
recognises the paths with two string tests and calls the endpoint directly, timing it into the same
metrics series the router path uses. Anything else (other routes, HEAD, a GET carrying a body, a
feedback body without a ``content-length`` within the body limit, a mounted root path) goes down the
ordinary stack, where the same endpoints are also routed, so behaviour does not depend on which path ran.
"""

from __future__ import annotations

import time
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from adserver.feedback_route import FeedbackEndpoint
from adserver.http.metrics import RequestMetrics
from adserver.http.middleware import MAX_BODY_BYTES
from adserver.serve import ServeEndpoint

SERVE_ROUTE: Final = "/ad/user/{user_id}/serve"
FEEDBACK_ROUTE: Final = "/ad/{request_id}/feedback"
_PREFIX: Final = "/ad/user/"
_SUFFIX: Final = "/serve"
_FEEDBACK_PREFIX: Final = "/ad/"
_FEEDBACK_SUFFIX: Final = "/feedback"
_BODY_HEADERS: Final = (b"content-length", b"transfer-encoding")


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, _ in headers:  # noqa: SIM110  (a generator expression here cost 3% of a worker's CPU)
        if name in _BODY_HEADERS:
            return True
    return False


def _small_fixed_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """A ``content-length`` within the body limit and no ``transfer-encoding``: the body-limit
    middleware would pass it untouched, so the fast path may read it."""
    length = -1
    for name, value in headers:
        if name == b"content-length":
            if length >= 0 or not value.isdigit():
                return False
            length = int(value)
        elif name == b"transfer-encoding":
            return False
    return 0 <= length <= MAX_BODY_BYTES


class FastPath:
    """Pure-ASGI middleware that answers the serve and feedback routes without the router."""

    def __init__(
        self, app: ASGIApp, serve: ServeEndpoint, feedback: FeedbackEndpoint, metrics: RequestMetrics
    ) -> None:
        self.app = app
        self._serve = serve
        self._feedback = feedback
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method = scope["method"]
            path: str = scope["path"]
            if method == "GET" and path.startswith(_PREFIX) and path.endswith(_SUFFIX):
                user_id = path[len(_PREFIX) : -len(_SUFFIX)]
                # Same match as the route's ``{user_id}`` (one non-empty segment); bodies go the long way
                # so the request-size limit sees them.
                if user_id and "/" not in user_id and not _has_body(scope["headers"]):
                    started = time.perf_counter()
                    status = 500
                    try:
                        status = await self._serve.respond(user_id, scope["query_string"], send)
                    finally:
                        self._metrics.observe(SERVE_ROUTE, status, time.perf_counter() - started)
                    return
            elif method == "POST" and path.startswith(_FEEDBACK_PREFIX) and path.endswith(_FEEDBACK_SUFFIX):
                request_id = path[len(_FEEDBACK_PREFIX) : -len(_FEEDBACK_SUFFIX)]
                if request_id and "/" not in request_id and _small_fixed_body(scope["headers"]):
                    started = time.perf_counter()
                    status = 500
                    try:
                        status = await self._feedback.respond(request_id, receive, send)
                    finally:
                        if status:  # 0: the client left before sending its body; nothing to count
                            self._metrics.observe(FEEDBACK_ROUTE, status, time.perf_counter() - started)
                    return
        await self.app(scope, receive, send)
