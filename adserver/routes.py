"""The ad server's routes, in one list: the extension point for new endpoints.

The hot serve route is answered by ``adserver.fastpath`` before the router; its route here serves HEAD
and the odd request the fast path leaves alone.
To add an endpoint, write it in its own module as a function of the ``StateRef`` and append its
``Route`` in ``build_routes``; document it in ``adserver.openapi``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from adserver import health, openapi
from adserver.fastpath import SERVE_ROUTE
from adserver.feedback_route import FeedbackEndpoint
from adserver.serve import ServeEndpoint
from adserver.state import StateRef


async def openapi_json(request: Request) -> Response:
    return Response(openapi.ENCODED, media_type="application/json")


def build_routes(ref: StateRef, serve: ServeEndpoint) -> list[BaseRoute]:
    """Every route; ``serve`` is the worker's one serve endpoint (the fast path calls it too)."""
    return [
        Route(SERVE_ROUTE, serve, methods=["GET"]),
        Route("/ad/{request_id}/feedback", FeedbackEndpoint(ref), methods=["POST"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz(ref), methods=["GET"]),
        Route("/metrics", health.metrics(ref), methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
