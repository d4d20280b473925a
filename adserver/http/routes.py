"""The ad server's routes, in one list: the extension point for new endpoints.

The hot serve and feedback routes are answered by ``adserver.http.fastpath`` before the router; their routes
here serve HEAD and the odd request the fast path leaves alone (e.g. a chunked feedback body).
To add an endpoint, write it in its own module as a function of the ``StateRef`` and append its
``Route`` in ``build_routes``; document it in ``adserver.http.openapi``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from adserver.feedback_route import FeedbackEndpoint
from adserver.http import health, openapi
from adserver.http.fastpath import FEEDBACK_ROUTE, SERVE_ROUTE
from adserver.http.index_route import ROUTE as INDEX_ROUTE
from adserver.http.index_route import campaign_version
from adserver.serve import ServeEndpoint
from adserver.state import StateRef


async def openapi_json(request: Request) -> Response:
    return Response(openapi.ENCODED, media_type="application/json")


def build_routes(ref: StateRef, serve: ServeEndpoint, feedback: FeedbackEndpoint) -> list[BaseRoute]:
    """Every route; ``serve`` and ``feedback`` are the worker's endpoints the fast path calls too."""
    return [
        Route(SERVE_ROUTE, serve, methods=["GET"]),
        Route(FEEDBACK_ROUTE, feedback, methods=["POST"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz(ref), methods=["GET"]),
        Route("/metrics", health.metrics(ref), methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route(INDEX_ROUTE, campaign_version(ref), methods=["GET"]),
    ]
