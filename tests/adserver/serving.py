"""Helpers of the ad-server tests: campaign rows in the seed format, ingestion through the production
path (producer → Ad Manager), and the app running its real lifespan behind an in-process HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from adplatform.config import Config
from adplatform.kafka import make_producer
from adserver.app import create_app
from adserver.http.protocol import GuardedHttpToolsProtocol
from adserver.state import ServerState, StateRef
from ingest.csvfile import format_flight
from ingest.generator import write_campaigns_csv
from ingest.instruction import COLUMNS, NEW, encode_instruction, instruction_from_row
from ingest.manager import AdManager, open_manager, run_manager
from ingest.producer import produce_file

SERVE = "/ad/user/{user_id}/serve"
ANONYMOUS = "1111-1111-1111-1111"


def campaign_row(
    campaign_id: str,
    *,
    action: str = NEW,
    text: str | None = None,
    cpc: str = "0.0010",
    cpa: str = "0.0200",
    budget: str = "500",
    city: str = "All",
    state: str = "All",
    country: str = "India",
    device: str = "All",
    gender: str = "All",
    age: tuple[int, int] = (0, 0),
    income: str = "All",
    starts_in: timedelta = timedelta(hours=-1),
    lasts: timedelta = timedelta(hours=24),
) -> dict[str, str]:
    """One instruction row in the seed format; by default targeting everyone, live now for a day."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) + starts_in
    date_range, time_range = format_flight(start, start + lasts)
    row = {
        "text": text if text is not None else f"ad of {campaign_id}",
        "category": "Tests",
        "keywords": "test",
        "campaign_id": campaign_id,
        "action": action,
        "target_gender": gender,
        "target_age_range": f"{{'start': '{age[0]}', 'end': '{age[1]}'}}",
        "target_city": city,
        "target_state": state,
        "target_country": country,
        "target_income_bucket": income,
        "target_device": device,
        "cpc": cpc,
        "cpa": cpa,
        "budget": budget,
        "date_range": date_range,
        "time_range": time_range,
    }
    return {c: row[c] for c in COLUMNS}


async def ingest(config: Config, rows: list[dict[str, str]], tmp_path: Path) -> None:
    """Rows → CSV → producer → Ad Manager (until idle): the production path into ad-changes."""
    path = tmp_path / f"campaigns-{time.monotonic_ns()}.csv"
    write_campaigns_csv(path, rows)
    summary = await produce_file(config, path)
    assert summary.skipped == 0, summary.errors
    stats = await run_manager(config, until_idle=True, idle_timeout_s=120)
    assert stats.rejected == 0, stats.reasons


class InstructionSender:
    """Publishes single instructions as the producer does (same encoding, key = campaign id)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._producer = make_producer(config, linger_ms=0, client_id="test-instructions")

    async def __aenter__(self) -> InstructionSender:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, row: dict[str, str]) -> None:
        value = encode_instruction(instruction_from_row(row))
        await self._producer.send_and_wait(
            self._config.topics.instructions, value, key=row["campaign_id"].encode()
        )


@contextlib.asynccontextmanager
async def manager_running(config: Config) -> AsyncIterator[AdManager]:
    """An Ad Manager consuming in the background until the block ends."""
    async with open_manager(config) as manager:
        task = asyncio.create_task(manager.run())
        try:
            yield manager
        finally:
            manager.stop()
            await task


def state_of(app: Starlette) -> ServerState:
    ref = app.state.ref
    assert isinstance(ref, StateRef) and ref.state is not None
    return ref.state


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float, poll_s: float = 0.002
) -> float:
    """Seconds until ``check()`` holds; fails the test after ``timeout_s``."""
    started = time.monotonic()
    while not await check():
        elapsed = time.monotonic() - started
        assert elapsed < timeout_s, f"condition not met within {timeout_s}s"
        await asyncio.sleep(poll_s)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def serving(
    config: Config, *, wait_ready: bool = True
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """The app with its real lifespan (Kafka, Redis, PostgreSQL), and a client calling it in-process."""
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://adserver") as client:
            if wait_ready:
                await eventually(lambda: _ready(client), timeout_s=30, poll_s=0.05)
            yield app, client


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def serve(client: httpx.AsyncClient, user_id: str = "u1", **params: Any) -> httpx.Response:
    return await client.get(SERVE.format(user_id=user_id), params=params)


async def served_id(client: httpx.AsyncClient, user_id: str = "u1", **params: Any) -> str | None:
    """The campaign id the server picks for this request, or None on 404 (anything else fails)."""
    response = await serve(client, user_id, **params)
    if response.status_code == 404:
        assert response.json() == {"detail": "No eligible ads found."}
        return None
    assert response.status_code == 200, response.text
    campaign_id = response.json()["campaign_id"]
    assert isinstance(campaign_id, str)
    return campaign_id


@contextlib.asynccontextmanager
async def guarded_uvicorn(app: ASGIApp, **options: Any) -> AsyncIterator[int]:
    """uvicorn on a free local port with the ad server's ``GuardedHttpToolsProtocol``; yields the port."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=GuardedHttpToolsProtocol, lifespan="off",
                            **{"log_level": "warning", **options})  # fmt: skip
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:  # noqa: ASYNC110  (uvicorn exposes a flag, not an event)
        await asyncio.sleep(0.01)
    port: int = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        srv.should_exit = True
        await asyncio.wait_for(task, 10)


class CountingApp:
    """An ASGI app in front of ``app`` that notes each HTTP request it is given (``METHOD path``): the ad
    server's protocol still finds ``app``'s direct path through ``.app`` (``adserver.http.direct.direct_of``),
    so what the direct path answers never shows here. (The protocol is compiled: a spy patched onto one of
    its methods would not see the calls its own compiled code makes.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


class Recorder:
    """A transport that records what a protocol or response cycle writes, and whether it closed."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True
