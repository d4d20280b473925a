"""How long a piece of async work holds the event loop: what a request arriving meanwhile would wait.

A sampler task sleeps ``SAMPLE_S`` over and over while the work runs; the longest it overslept is the
longest the loop was held. The benches of the workers' background work (``bench.throttle_tick``,
``bench.profiles_reload``, ``bench.index_churn``) measure with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")

#: The sampler's sleep: its overshoot is how long the loop was held.
SAMPLE_S = 0.0005


class Held(NamedTuple, Generic[T]):
    """One run of the work: its CPU (this process) and wall seconds, the longest hold, its result."""

    cpu_s: float
    wall_s: float
    held_s: float
    result: T


async def held(work: Callable[[], Awaitable[T]]) -> Held[T]:
    """Run ``work()`` once beside the sampler."""
    worst = 0.0
    running = True

    async def sampler() -> None:
        nonlocal worst
        while running:
            start = time.perf_counter()
            await asyncio.sleep(SAMPLE_S)
            worst = max(worst, time.perf_counter() - start - SAMPLE_S)

    task = asyncio.create_task(sampler())
    await asyncio.sleep(0.01)  # the sampler's first sleeps, not the work's
    worst = 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = await work()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await asyncio.sleep(0.002)  # the sampler's wake-up after the work's last step
    running = False
    await task
    return Held(cpu, wall, worst, result)
