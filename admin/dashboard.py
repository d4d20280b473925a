"""The live dashboard under ``/dashboard``: login with an API key, the overview, the campaigns table and a
page per campaign, drawn in the browser from the JSON of ``/dashboard/api/*``.

Pages are static files (``admin/static/dashboard``) sent with ``Content-Security-Policy: default-src
'self'``: scripts, styles and the vendored Chart.js come from this service only, nothing inline, nothing
from elsewhere. An unauthenticated page redirects to the login form; an unauthenticated ``/dashboard/api``
call answers 401. Writes (stop, resume) need the write role (403 otherwise), the session's CSRF token and,
when the browser names one, this service as ``Origin``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs

import httpx
import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from admin import board_data, writes
from admin.api import state_of
from admin.board_schema import Burn, CampaignCounts
from admin.body import read_body
from admin.error import AdminError
from admin.keys import Principal, authenticate
from admin.reads import campaign_detail
from admin.scrape import Scraper
from admin.session import (
    COOKIE,
    CSRF_HEADER,
    Session,
    SessionStore,
    clear_cookie,
    csrf_ok,
    same_origin,
    set_cookie,
    still_valid,
)
from admin.state import AdminState, StateRef
from adplatform.redis_latency import StallReport

PAGES: Final = Path(__file__).resolve().parent / "static" / "dashboard"
#: How often the overview page polls (the issue asks for at least every 2 s).
REFRESH_MS: Final = 1000
#: Campaign counts and burn (a query and a Redis pipeline over live campaigns) and Redis's stalls (its
#: latency monitor) are reused this long.
COUNTS_TTL_S: Final = 1.9
LOGIN_BODY_BYTES: Final = 4096
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make Chromium send `Origin: null` on POSTs
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_json = msgspec.json.Encoder()
Endpoint = Callable[[Request], Awaitable[Response]]


def _secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def _encoded(body: object, status: int = 200) -> Response:
    return _secured(Response(_json.encode(body), status_code=status, media_type="application/json"))


def scrape_urls(state: AdminState) -> tuple[str, ...]:
    """``ADP_ADMIN_SCRAPE_URLS``, else each ad server's ``/metrics`` and every service's metrics port."""
    if state.settings.scrape_urls:
        return state.settings.scrape_urls
    host = state.config.metrics_host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # listening everywhere: ask loopback
    ports = sorted(p for p in state.config.metrics_ports.values() if p)
    return (
        *(f"{u}/metrics" for u in state.settings.adserver_urls),
        *(f"http://{host}:{p}/metrics" for p in ports),
    )


class Board:
    """The dashboard's sessions, scraper and routes; ``running()`` opens and closes its HTTP client."""

    def __init__(self, ref: StateRef) -> None:
        self._ref = ref
        self.sessions = SessionStore()
        self._client: httpx.AsyncClient | None = None
        self._scraper: Scraper | None = None
        self._counts: tuple[float, CampaignCounts, Burn, StallReport | None] | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        # httpx logs every request at INFO: a scrape a second per open dashboard would flood the log.
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
        self._client = httpx.AsyncClient(timeout=1.0, limits=httpx.Limits(max_connections=32))
        self._scraper = Scraper(self._client)
        try:
            yield
        finally:
            await self._client.aclose()
            self._client = self._scraper = None

    async def _who(self, request: Request) -> tuple[AdminState, Session, Principal] | None:
        state = state_of(self._ref)
        sid = request.cookies.get(COOKIE)
        session = self.sessions.get(sid)
        if session is None:
            return None
        principal = await still_valid(state.pool, session)
        if principal is None:
            self.sessions.drop(sid)
            return None
        return state, session, principal

    async def _api_who(self, request: Request) -> tuple[AdminState, Session, Principal]:
        who = await self._who(request)
        if who is None:
            raise AdminError(401, "Log in at /dashboard/login.")
        return who

    def _page(self, name: str) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            if await self._who(request) is None:
                return _secured(RedirectResponse("/dashboard/login", status_code=303))
            return _secured(FileResponse(PAGES / name, media_type="text/html"))

        return endpoint

    async def login_form(self, request: Request) -> Response:
        return _secured(FileResponse(PAGES / "login.html", media_type="text/html"))

    async def login(self, request: Request) -> Response:
        state = state_of(self._ref)
        if not same_origin(request):
            raise AdminError(403, "Cross-site login refused.")
        form = parse_qs((await read_body(request, LOGIN_BODY_BYTES)).decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0].strip()
        principal = await authenticate(state.pool, key) if key else None
        if principal is None:  # the key itself is neither logged nor echoed
            return _secured(RedirectResponse("/dashboard/login?failed=1", status_code=303))
        sid, _ = self.sessions.create(principal)
        response = _secured(RedirectResponse("/dashboard/", status_code=303))
        set_cookie(response, request, sid)
        return response

    async def logout(self, request: Request) -> Response:
        _, session, _ = await self._api_who(request)
        self._check_write(request, session)
        self.sessions.drop(request.cookies.get(COOKIE))
        response = _encoded({"logged_out": True})
        clear_cookie(response)
        return response

    def _check_write(self, request: Request, session: Session) -> None:
        if not same_origin(request):
            raise AdminError(403, "Cross-site request refused.")
        if not csrf_ok(session, request.headers.get(CSRF_HEADER)):
            raise AdminError(403, "Missing or wrong CSRF token.")

    async def me(self, request: Request) -> Response:
        _, session, principal = await self._api_who(request)
        return _encoded({"name": principal.name, "role": principal.role, "csrf": session.csrf,
                         "refresh_ms": REFRESH_MS})  # fmt: skip

    async def overview(self, request: Request) -> Response:
        state, _, _ = await self._api_who(request)
        assert self._scraper is not None
        new, old = await self._scraper.latest(scrape_urls(state))
        now = time.monotonic()
        if self._counts is None or now - self._counts[0] >= COUNTS_TTL_S:
            counts, burn = await board_data.campaign_counts(state, time.time())
            stalls = await board_data.redis_stalls(state.redis, time.time())
            self._counts = (now, counts, burn, stalls)
        _, counts, burn, stalls = self._counts
        return _encoded(board_data.overview(new, old, counts, burn, REFRESH_MS, stalls))

    async def campaigns(self, request: Request) -> Response:
        state, _, _ = await self._api_who(request)
        q = request.query_params.get("q", "")
        if len(q) > 200 or "\x00" in q:
            raise AdminError(422, "Invalid query.", errors={"q": "longer than 200 chars or has NUL"})
        return _encoded(await board_data.campaign_rows(state, q or None))

    async def campaign(self, request: Request) -> Response:
        state, _, _ = await self._api_who(request)
        return _encoded(await board_data.campaign_board(state, request.path_params["campaign_id"]))

    async def stop(self, request: Request) -> Response:
        state, _, principal = await self._writer(request)
        return _encoded(await writes.stop(state, request.path_params["campaign_id"], principal), 202)

    async def resume(self, request: Request) -> Response:
        """An Update instruction with the stored budget: any Update makes a stopped campaign Active again
        (the Ad Manager's rule), and this one changes nothing else."""
        state, _, principal = await self._writer(request)
        campaign_id = request.path_params["campaign_id"]
        detail = await campaign_detail(state, campaign_id)
        result = await writes.update(state, campaign_id, {"budget": detail.campaign.budget}, principal)
        return _encoded(result, 202)

    async def _writer(self, request: Request) -> tuple[AdminState, Session, Principal]:
        state, session, principal = await self._api_who(request)
        self._check_write(request, session)
        if not principal.allows("write"):
            raise AdminError(
                403, f"This needs the write role; the key {principal.name!r} has {principal.role}."
            )
        await read_body(request, LOGIN_BODY_BYTES)  # any body is ignored, but bounded
        return state, session, principal

    async def _home(self, request: Request) -> Response:
        return _secured(RedirectResponse("/dashboard/", status_code=307))

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/dashboard", self._home, methods=["GET"]),
            Route("/dashboard/", self._page("index.html"), methods=["GET"]),
            Route("/dashboard/campaigns/{campaign_id}", self._page("campaign.html"), methods=["GET"]),
            Route("/dashboard/login", self.login_form, methods=["GET"]),
            Route("/dashboard/login", self.login, methods=["POST"]),
            Route("/dashboard/logout", self.logout, methods=["POST"]),
            Route("/dashboard/api/me", self.me, methods=["GET"]),
            Route("/dashboard/api/overview", self.overview, methods=["GET"]),
            Route("/dashboard/api/campaigns", self.campaigns, methods=["GET"]),
            Route("/dashboard/api/campaigns/{campaign_id}", self.campaign, methods=["GET"]),
            Route("/dashboard/api/campaigns/{campaign_id}/stop", self.stop, methods=["POST"]),
            Route("/dashboard/api/campaigns/{campaign_id}/resume", self.resume, methods=["POST"]),
        ]
