"""Read your own write: wait until a campaign's new version is in PostgreSQL and in every ad-server
worker's index.

PostgreSQL first (the Ad Manager stores a batch before it publishes it to ``ad-changes``), then each
configured ad-server URL: ``GET /index/campaigns/{id}`` over fresh connections, several at once, until
``ADP_ADSERVER_WORKERS`` distinct workers (pids) behind that URL report a version at least the target.
Versions only grow, so a worker that reported it once keeps it. Past the deadline: 504 naming what lagged
(the instruction stays published; the write still happens).
"""

from __future__ import annotations

import asyncio
import time

import httpx

from admin.error import AdminError
from admin.state import AdminState

#: Polls sent at once per URL and round: enough that the kernel spreads them over the workers.
PARALLEL = 4


async def _pg_version(state: AdminState, campaign_id: str) -> int | None:
    version: int | None = await state.pool.fetchval(
        "SELECT version FROM online_ads.ads WHERE campaign_id = $1", campaign_id
    )
    return version


async def _poll(client: httpx.AsyncClient, url: str) -> tuple[int, int | None] | None:
    try:
        response = await client.get(url)
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return None  # that worker is restarting, or not listening yet
    worker, version = body.get("worker"), body.get("version")
    if not isinstance(worker, int) or not (version is None or isinstance(version, int)):
        return None
    return worker, version


async def wait_applied(state: AdminState, campaign_id: str, version: int) -> float:
    """Milliseconds until ``version`` is applied everywhere; ``AdminError(504)`` after the timeout."""
    started = time.monotonic()
    deadline = started + state.settings.wait_timeout_s
    sleep_s = 0.005
    while True:
        current = await _pg_version(state, campaign_id)
        if current is not None and current >= version:
            break
        if time.monotonic() > deadline:
            raise _timeout(campaign_id, version, "PostgreSQL", {"postgres_version": current})
        await asyncio.sleep(sleep_s)
        sleep_s = min(sleep_s * 2, 0.05)
    workers = state.settings.adserver_workers
    for base in state.settings.adserver_urls:
        url = f"{base}/index/campaigns/{campaign_id}"
        caught_up: set[int] = set()
        seen: dict[int, int | None] = {}
        sleep_s = 0.002
        while len(caught_up) < workers:
            answers = await asyncio.gather(*(_poll(state.adservers, url) for _ in range(PARALLEL)))
            for answer in answers:
                if answer is None:
                    continue
                worker, got = answer
                seen[worker] = got
                if got is not None and got >= version:
                    caught_up.add(worker)
            if len(caught_up) >= workers:
                break
            if time.monotonic() > deadline:
                raise _timeout(campaign_id, version, base, {"workers": {str(k): v for k, v in seen.items()}})
            await asyncio.sleep(sleep_s)
            sleep_s = min(sleep_s * 2, 0.05)
    return (time.monotonic() - started) * 1000


def _timeout(campaign_id: str, version: int, where: str, seen: dict[str, object]) -> AdminError:
    return AdminError(
        504,
        f"version {version} of {campaign_id} not applied by {where} in time; the instruction is published "
        "and will still be applied",
        extra={"campaign_id": campaign_id, "version": version, "waiting_for": where, **seen},
    )
