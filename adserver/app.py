"""The ad server's ASGI app: ``create_app(config)`` for tests and embedding, ``app`` for uvicorn/granian.

``uvicorn adserver.app:app`` imports this module in each worker: building the app opens no connection
and reads no configuration; both happen in the lifespan (config from ``ADP_*`` / ``.env`` when none is
given).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adplatform.config import Config
from adserver.fcap_lifespan import fcap_component
from adserver.feedback_route import FeedbackEndpoint, feedback_component
from adserver.http.direct import DirectServe
from adserver.http.fastpath import FastPath
from adserver.http.health import flushing
from adserver.http.middleware import BodyLimitMiddleware, RequestLimitMiddleware, TimingMiddleware
from adserver.http.routes import build_routes
from adserver.lifespan import CORE_COMPONENTS, Component, lifespan
from adserver.serve import ServeEndpoint
from adserver.state import StateRef

#: Every lifespan component of a worker, started in order and stopped in reverse: serving's, then the
#: feedback path's (Redis budgets and the ad-feedback producer), and the frequency caps' Redis client.
COMPONENTS: tuple[Component, ...] = (*CORE_COMPONENTS, feedback_component, fcap_component)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": "Internal server error."}, status_code=500)


def create_app(config: Config | None = None, *, components: Sequence[Component] = COMPONENTS) -> Starlette:
    """A new ad-server app; ``config=None`` reads the environment when the lifespan starts."""
    ref = StateRef()

    @contextlib.asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[None]:
        async with lifespan(ref, config, components), flushing(ref):
            yield

    serve = ServeEndpoint(ref)
    feedback = FeedbackEndpoint(ref)
    app = Starlette(
        routes=build_routes(ref, serve, feedback),
        middleware=[
            Middleware(RequestLimitMiddleware),
            Middleware(FastPath, serve=serve, feedback=feedback, metrics=ref.metrics),
            Middleware(TimingMiddleware, metrics=ref.metrics),
            Middleware(BodyLimitMiddleware),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=run,
    )
    app.state.ref = ref  # for tests and tools; routes hold ``ref`` directly
    # uvicorn's protocol (adserver.http.protocol) answers plain serve GETs and feedback POSTs through
    # it, skipping ASGI.
    app.state.direct_serve = DirectServe(serve, ref.metrics, feedback)
    return app


app = create_app()
