"""The user simulator: users ask for ads and give feedback, like the original platform's simulator.

Users come from ``online_ads."user"``; 5% of requests are privacy-enabled (the anonymous id, no
demographics); cities are drawn by population with their states; device types come from the user
table. Every served ad gets feedback with ``view = 1`` and click/acquisition drawn from the user's
age-bucket rates. The run is bounded by its duration and paced to a target rate; it ends with a summary.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import httpx
import orjson

from adserver.token import digest
from index.geo import DEFAULT_GEO
from ingest.generator import ACTION_RATES, action_rate

ANONYMOUS_USER = "1111-1111-1111-1111"
PRIVACY_SHARE = 0.05


@dataclass(frozen=True)
class SimUser:
    user_id: str
    age: int
    device_type: str


@dataclass
class SimSummary:
    requests: int = 0
    served: int = 0
    no_ad: int = 0
    feedback_sent: int = 0
    feedback_ok: int = 0
    views: int = 0
    clicks: int = 0
    acquisitions: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    serve_ms: list[float] = field(default_factory=list)
    feedback_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    served_request_ids: list[str] = field(default_factory=list)
    #: ``event_id`` of every feedback the server acknowledged (200): each must reach ad-feedback once.
    acked_event_ids: list[str] = field(default_factory=list)

    @property
    def fill_rate(self) -> float:
        return self.served / self.requests if self.requests else 0.0

    @property
    def ctr(self) -> float:
        return self.clicks / self.views if self.views else 0.0

    @property
    def conversion_rate(self) -> float:
        return self.acquisitions / self.clicks if self.clicks else 0.0

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load_users(dsn: str, limit: int = 100_000) -> list[SimUser]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch('SELECT user_id, age, device_type FROM online_ads."user" LIMIT $1', limit)
    finally:
        await conn.close()
    return [SimUser(r["user_id"], r["age"], r["device_type"]) for r in rows]


class Simulator:
    """Drives ``rate`` requests/s for ``duration_s`` with at most ``concurrency`` in flight."""

    def __init__(
        self,
        users: list[SimUser],
        *,
        ad_url: str,
        feedback_url: str | None = None,
        rate: float,
        concurrency: int = 32,
        seed: int = 1,
    ) -> None:
        if not users:
            raise ValueError('no users in online_ads."user": run `adplatform generate users` first')
        self._users = users
        self._ad_url = ad_url.rstrip("/")
        self._feedback_url = (feedback_url or ad_url).rstrip("/")
        self._rate = rate
        self._concurrency = concurrency
        self._rng = random.Random(seed)
        self._cities, self._weights = DEFAULT_GEO.city_weights()
        self.summary = SimSummary()

    def _request(self) -> tuple[str, dict[str, str], int | None]:
        city_name = self._rng.choices(self._cities, self._weights)[0]
        city = DEFAULT_GEO.city(city_name)
        assert city is not None
        user = self._rng.choice(self._users)
        params = {"device_type": user.device_type, "city": city.name, "state": city.state}
        if self._rng.random() < PRIVACY_SHARE:
            return ANONYMOUS_USER, params, None
        return user.user_id, params, user.age

    async def _one(self, client: httpx.AsyncClient) -> None:
        s = self.summary
        user_id, params, age = self._request()
        s.requests += 1
        t0 = time.perf_counter()
        try:
            response = await client.get(f"{self._ad_url}/ad/user/{user_id}/serve", params=params)
        except httpx.HTTPError as exc:
            s.error(f"serve {type(exc).__name__}")
            return
        s.serve_ms.append((time.perf_counter() - t0) * 1000)
        if response.status_code == 404:
            s.no_ad += 1
            return
        if response.status_code != 200:
            s.error(f"serve HTTP {response.status_code}")
            return
        s.served += 1
        request_id = orjson.loads(response.content)["request_id"]
        s.served_request_ids.append(request_id)
        rate = action_rate(age) if age is not None else ACTION_RATES[1]
        click = int(self._rng.random() < rate.click)
        acquisition = int(click == 1 and self._rng.random() < rate.acquisition)
        body = {"view": 1, "click": click, "acquisition": acquisition}
        s.feedback_sent += 1
        t0 = time.perf_counter()
        try:
            fb = await client.post(f"{self._feedback_url}/ad/{request_id}/feedback", json=body)
        except httpx.HTTPError as exc:
            s.error(f"feedback {type(exc).__name__}")
            return
        s.feedback_ms.append((time.perf_counter() - t0) * 1000)
        if fb.status_code != 200:
            s.error(f"feedback HTTP {fb.status_code}")
            return
        s.feedback_ok += 1
        action = "acquisition" if acquisition else "click" if click else "view"
        s.acked_event_ids.append(f"{digest(request_id)}:{action}")
        s.views += 1
        s.clicks += click
        s.acquisitions += acquisition

    async def run(
        self, duration_s: float, on_tick: Callable[[SimSummary, float], None] | None = None
    ) -> SimSummary:
        limits = httpx.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency)
        gate = asyncio.Semaphore(self._concurrency)
        tasks: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        next_tick = started + 1
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(10.0)) as client:

            async def guarded() -> None:
                try:
                    await self._one(client)
                finally:
                    gate.release()

            sent = 0
            while (now := time.monotonic()) - started < duration_s:
                due = int((now - started) * self._rate)
                while sent < due and time.monotonic() - started < duration_s:
                    await gate.acquire()
                    task = asyncio.create_task(guarded())
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    sent += 1
                if on_tick and now >= next_tick:
                    on_tick(self.summary, now - started)
                    next_tick += 1
                await asyncio.sleep(0.005)
            if tasks:
                await asyncio.gather(*tasks)
        self.summary.elapsed_s = time.monotonic() - started
        return self.summary


def format_summary(s: SimSummary, *, spend: str = "n/a") -> str:
    def p(values: list[float], q: float) -> str:
        return f"{percentile(values, q):.1f} ms"

    lines = [
        f"requests        {s.requests:>10}   ({s.requests / s.elapsed_s if s.elapsed_s else 0:,.0f}/s)",
        f"served          {s.served:>10}   fill rate {s.fill_rate:.1%}",
        f"feedback        {s.feedback_ok:>10} / {s.feedback_sent} accepted",
        f"CTR             {s.ctr:>10.2%}   conversion rate {s.conversion_rate:.2%}",
        f"spend           {spend:>10}",
        f"serve latency   p50 {p(s.serve_ms, 0.5)}  p99 {p(s.serve_ms, 0.99)}",
        f"feedback lat.   p50 {p(s.feedback_ms, 0.5)}  p99 {p(s.feedback_ms, 0.99)}",
        f"errors          {s.errors:>10}   {s.error_kinds or ''}",
    ]
    return "\n".join(lines)
