"""Every worker behind one port: ``adplatform serve --workers N`` runs N processes on one socket, and one
``/readyz`` 200 says only that the worker which took that connection is ready; the next connection may
reach another one still bootstrapping its index (and answering serve with 503).

``/readyz`` names the answering worker (its pid), so polling it over fresh connections reaches each worker
in turn; a load run starts once every one of them is ready.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson


async def each_worker(url: str, workers: int, *, attempts: int = 200) -> dict[int, dict[str, Any]] | None:
    """The ``/readyz`` body of each of ``workers`` workers by pid, or None if not all answered."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(attempts):
        async with httpx.AsyncClient(base_url=url, timeout=2) as client:  # a new connection each time
            body = orjson.loads((await client.get("/readyz")).content)
        if "worker" in body:
            seen[body["worker"]] = body
        if len(seen) == workers:
            return seen
    return None


async def wait_workers_ready(url: str, workers: int, *, timeout_s: float = 120, index_size: int = 0) -> None:
    """Until each worker answers ready with at least ``index_size`` campaigns; TimeoutError after that."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            seen = await each_worker(url, workers)
        except httpx.HTTPError:
            seen = None  # not listening yet
        if seen and all(b["status"] == "ready" and b["index_size"] >= index_size for b in seen.values()):
            return
        if time.monotonic() > deadline:
            states = {pid: (b["status"], b.get("index_size")) for pid, b in (seen or {}).items()}
            raise TimeoutError(f"{url}: not all {workers} workers ready within {timeout_s:.0f}s: {states}")
        await asyncio.sleep(0.2)
