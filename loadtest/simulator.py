"""The user simulator: users ask for ads and give feedback, like the original platform's simulator.

Users come from ``online_ads."user"``; 5% of requests are privacy-enabled (the anonymous id, no
demographics); cities are drawn by population with their states; device types come from the user
table. Every served ad gets feedback with ``view = 1`` and click/acquisition drawn from the user's
age-bucket rates. The run is bounded by its duration and paced to a target rate; it ends with a summary.

With several ad-server hosts (``hosts``), each request goes to one of them at random and a 503 or a
connection error is retried on the next host, a feedback with the same ``request_id`` (the platform's
client contract), until ``retry_for_s``: the load a fault on one host leaves the others.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import httpx
import orjson

from adserver.token import digest
from index.geo import DEFAULT_GEO
from ingest.generator import ACTION_RATES, action_rate
from loadtest.http_client import Reply, SimClient

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
    #: Ad requests that got an HTTP answer (any status).
    answered: int = 0
    #: The configured rate (ad requests per second).
    rate: float = 0.0
    error_kinds: dict[str, int] = field(default_factory=dict)
    serve_ms: list[float] = field(default_factory=list)
    feedback_ms: list[float] = field(default_factory=list)
    #: How late each ad request left against its schedule: the simulator's own lag (a busy client).
    send_lag_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    served_request_ids: list[str] = field(default_factory=list)
    #: ``event_id`` of every feedback the server acknowledged (200): each must reach ad-feedback once.
    acked_event_ids: list[str] = field(default_factory=list)
    #: Attempts sent again to another host (several hosts only).
    retries: int = 0
    #: (start, end, ok) of every request, monotonic seconds: the load during a window (a fault's).
    timeline: list[tuple[float, float, bool]] = field(default_factory=list)

    def window(self, start: float, end: float) -> tuple[float, float]:
        """Requests/s answered without error that ended in [start, end), and the error share of the
        requests that began in it."""
        span = max(end - start, 1e-9)
        ended_ok = sum(1 for _, e, ok in self.timeline if ok and start <= e < end)
        begun = [ok for b, _, ok in self.timeline if start <= b < end]
        share = (len(begun) - sum(begun)) / len(begun) if begun else 0.0
        return ended_ok / span, share

    @property
    def fill_rate(self) -> float:
        return self.served / self.requests if self.requests else 0.0

    @property
    def achieved_rate(self) -> float:
        """Answered ad requests per second of the run (the run ends when the last answer is in)."""
        return self.answered / self.elapsed_s if self.elapsed_s else 0.0

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
        hosts: Sequence[str] = (),
        retry_for_s: float = 30.0,
    ) -> None:
        if not users:
            raise ValueError('no users in online_ads."user": run `adplatform generate users` first')
        self._users = users
        self._ad_url = ad_url.rstrip("/")
        self._feedback_url = (feedback_url or ad_url).rstrip("/")
        self._hosts = [h.rstrip("/") for h in hosts]
        self._retry_for_s = retry_for_s
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

    async def _send(
        self,
        client: SimClient,
        method: str,
        base: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: object = None,
    ) -> Reply:
        """One request to ``base``; with several hosts, to a random one, retried on the next after a 503
        or a connection error (the same path: a feedback keeps its request_id) until ``retry_for_s``."""
        hosts = self._hosts
        if not hosts:
            return await client.request(method, base + path, params=params, json=json)
        first = self._rng.randrange(len(hosts))
        deadline = time.monotonic() + self._retry_for_s
        attempt = 0
        while True:
            host = hosts[(first + attempt) % len(hosts)]
            try:
                response = await client.request(method, host + path, params=params, json=json)
                if response.status_code != 503 or time.monotonic() > deadline:
                    return response
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            attempt += 1
            self.summary.retries += 1
            if attempt % len(hosts) == 0:  # every host refused: give them a moment
                await asyncio.sleep(0.2)

    async def _one(self, client: SimClient, intended: float) -> None:
        started = time.monotonic()
        ok = False
        try:
            ok = await self._exchange(client, intended)
        finally:
            self.summary.timeline.append((started, time.monotonic(), ok))

    async def _exchange(self, client: SimClient, intended: float) -> bool:
        """One user: an ad request, then feedback for a served ad; whether both ended without error. Serve
        latency counts from ``intended``, when the schedule meant to send it, not from when a connection was
        free: a slow server shows in the latency instead of quietly lowering the rate (coordinated
        omission)."""
        s = self.summary
        user_id, params, age = self._request()
        s.requests += 1
        s.send_lag_ms.append((time.perf_counter() - intended) * 1000)
        try:
            response = await self._send(
                client, "GET", self._ad_url, f"/ad/user/{user_id}/serve", params=params
            )
        except httpx.HTTPError as exc:
            s.error(f"serve {type(exc).__name__}")
            return False
        s.serve_ms.append((time.perf_counter() - intended) * 1000)
        s.answered += 1
        if response.status_code == 404:
            s.no_ad += 1
            return True
        if response.status_code != 200:
            s.error(f"serve HTTP {response.status_code}")
            return False
        s.served += 1
        request_id = orjson.loads(response.content)["request_id"]
        s.served_request_ids.append(request_id)
        rate = action_rate(age) if age is not None else ACTION_RATES[1]
        click = int(self._rng.random() < rate.click)
        acquisition = int(click == 1 and self._rng.random() < rate.acquisition)
        body = {"view": 1, "click": click, "acquisition": acquisition}
        s.feedback_sent += 1
        t0 = time.perf_counter()  # sent as soon as the ad arrived: its intended time is now
        try:
            fb = await self._send(client, "POST", self._feedback_url, f"/ad/{request_id}/feedback", json=body)
        except httpx.HTTPError as exc:
            s.error(f"feedback {type(exc).__name__}")
            return False
        s.feedback_ms.append((time.perf_counter() - t0) * 1000)
        if fb.status_code != 200:
            s.error(f"feedback HTTP {fb.status_code}")
            return False
        s.feedback_ok += 1
        action = "acquisition" if acquisition else "click" if click else "view"
        s.acked_event_ids.append(f"{digest(request_id)}:{action}")
        s.views += 1
        s.clicks += click
        s.acquisitions += acquisition
        return True

    async def run(
        self, duration_s: float, on_tick: Callable[[SimSummary, float], None] | None = None
    ) -> SimSummary:
        """Open loop: the i-th user arrives at ``i / rate`` seconds whatever the answers before it (a
        closed loop of ``concurrency`` users would slow down with the server and hide that). At most
        ``concurrency`` users are in flight; one that waits for a slot keeps its intended time."""
        s = self.summary
        s.rate = self._rate
        gate = asyncio.Semaphore(self._concurrency)
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        next_tick = 1.0
        # Not httpx: its CPU per request (~7x this client's) came out of the cores the platform needs.
        async with SimClient(max_connections=self._concurrency, timeout_s=10.0) as client:

            async def guarded(intended: float) -> None:
                async with gate:
                    await self._one(client, intended)

            total = int(duration_s * self._rate)
            for i in range(total):
                intended = started + i / self._rate
                # Always a sleep, even of 0: behind schedule, the answers still get their turn.
                await asyncio.sleep(max(0.0, intended - time.perf_counter()))
                task = asyncio.create_task(guarded(intended))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                elapsed = time.perf_counter() - started
                if on_tick and elapsed >= next_tick:
                    on_tick(s, elapsed)
                    next_tick = float(int(elapsed) + 1)
            if tasks:
                await asyncio.gather(*tasks)
        s.elapsed_s = time.perf_counter() - started
        return s


def format_summary(s: SimSummary, *, spend: str = "n/a") -> str:
    def p(values: list[float], q: float) -> str:
        return f"{percentile(values, q):.1f} ms"

    lines = [
        f"requests        {s.requests:>10}   ({s.requests / s.elapsed_s if s.elapsed_s else 0:,.0f}/s)",
        f"rate            configured {s.rate:,.0f}/s, achieved {s.achieved_rate:,.1f}/s (answered)",
        f"served          {s.served:>10}   fill rate {s.fill_rate:.1%}",
        f"feedback        {s.feedback_ok:>10} / {s.feedback_sent} accepted",
        f"CTR             {s.ctr:>10.2%}   conversion rate {s.conversion_rate:.2%}",
        f"spend           {spend:>10}",
        f"serve latency   p50 {p(s.serve_ms, 0.5)}  p99 {p(s.serve_ms, 0.99)}  (from its scheduled time)",
        f"feedback lat.   p50 {p(s.feedback_ms, 0.5)}  p99 {p(s.feedback_ms, 0.99)}",
        f"simulator lag   p50 {p(s.send_lag_ms, 0.5)}  p99 {p(s.send_lag_ms, 0.99)}  (sent after its time)",
        f"errors          {s.errors:>10}   {s.error_kinds or ''}",
    ]
    return "\n".join(lines)
