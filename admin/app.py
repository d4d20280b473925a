"""The admin service's ASGI app: ``create_app(config)`` for tests and embedding, ``app`` for uvicorn.

Building the app opens no connection and reads no configuration; both happen in the lifespan. Routes are
one list in ``build_routes``: to add an endpoint, write it in its own module as a function of the
``StateRef`` (see ``admin.api``) and append its ``Route`` there (and its path in ``admin.openapi``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import redis.exceptions
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from admin import api, insight_api, openapi
from admin.dashboard import Board
from admin.error import AdminError
from admin.lifespan import lifespan
from admin.settings import AdminConfig
from admin.state import StateRef
from adplatform.config import Config
from adplatform.errors import is_retriable

logger = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


async def openapi_json(request: Request) -> Response:
    return Response(openapi.ENCODED, media_type="application/json")


async def docs(request: Request) -> Response:
    return FileResponse(STATIC / "docs.html", media_type="text/html")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def build_routes(ref: StateRef) -> list[BaseRoute]:
    """Every route of the service: the extension point for new endpoints."""
    return [
        Route("/v1/campaigns", api.create_campaign(ref), methods=["POST"]),
        Route("/v1/campaigns", api.list_campaigns(ref), methods=["GET"]),
        Route("/v1/campaigns/{campaign_id}", api.show_campaign(ref), methods=["GET"]),
        Route("/v1/campaigns/{campaign_id}", api.update_campaign(ref), methods=["PATCH"]),
        Route("/v1/campaigns/{campaign_id}/stop", api.stop_campaign(ref), methods=["POST"]),
        Route("/v1/campaigns/{campaign_id}/diagnosis", insight_api.diagnosis(ref), methods=["GET"]),
        Route("/v1/explain", insight_api.explain(ref), methods=["GET"]),
        Route("/v1/dlq", api.list_dlq(ref), methods=["GET"]),
        Route("/v1/dlq/{partition}/{offset}/replay", api.replay_dlq(ref), methods=["POST"]),
        Route("/v1/audit", api.list_audit(ref), methods=["GET"]),
        Route("/v1/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


async def _admin_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AdminError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _unavailable(request: Request, exc: Exception) -> Response:
    """PostgreSQL or Redis down (or cut): 503, and the open transaction rolled back, so nothing written."""
    if not is_retriable(exc):
        return await _server_error(request, exc)
    logger.warning(
        "dependency unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__
    )
    return JSONResponse({"detail": "A dependency is unavailable; nothing was written."}, status_code=503)


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "Internal server error."}, status_code=500)


def create_app(config: Config | None = None, settings: AdminConfig | None = None) -> Starlette:
    """A new admin app; ``None`` reads the environment when the lifespan starts."""
    ref = StateRef()
    board = Board(ref)  # the dashboard: its routes, sessions and scraper

    @contextlib.asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[None]:
        async with lifespan(ref, config, settings), board.running():
            yield

    app = Starlette(
        routes=[*build_routes(ref), *board.routes()],
        exception_handlers={
            AdminError: _admin_error,
            HTTPException: _http_error,
            asyncpg.PostgresError: _unavailable,
            asyncpg.InterfaceError: _unavailable,
            OSError: _unavailable,
            redis.exceptions.RedisError: _unavailable,
            Exception: _server_error,
        },
        lifespan=run,
    )
    app.state.ref = ref
    return app


app = create_app()
