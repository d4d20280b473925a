"""The dashboard's live numbers from the services' ``/metrics``: scraped on demand, rates from snapshots.

``Scraper.latest()`` scrapes every target at most once per ``MIN_INTERVAL_S`` however many browsers poll
(an idle dashboard costs nothing: no page open, no scrape), parses each exposition with prometheus_client's
parser and keeps the snapshots of the last ``KEEP_S`` seconds. Rates and latency quantiles are the
difference between the newest snapshot and the oldest one within ``WINDOW_S`` (as ``rate()`` over that
window would be); totals are the newest snapshot's. Several targets' samples add up (two ad servers).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import httpx
from prometheus_client.parser import text_string_to_metric_families

#: Two browsers polling within this many seconds share one scrape.
MIN_INTERVAL_S: Final = 0.9
#: Rates are taken over (up to) this many seconds.
WINDOW_S: Final = 10.0
KEEP_S: Final = 30.0
TIMEOUT_S: Final = 0.8
SERVE_ROUTE: Final = "/ad/user/{user_id}/serve"
FEEDBACK_ROUTE: Final = "/ad/{request_id}/feedback"
#: The stages of a feedback batch in ``adserver_feedback_stage_seconds``, in their order.
FEEDBACK_STAGES: Final = ("gate", "debit", "publish")

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]


@dataclass(frozen=True)
class Target:
    """One scrape: its URL, whether it answered, and why not."""

    url: str
    up: bool
    error: str | None


@dataclass(frozen=True)
class Snapshot:
    """Every target's samples at ``at_s`` (monotonic), summed by (name, labels)."""

    at_s: float
    samples: Samples
    targets: tuple[Target, ...]

    def total(self, name: str, **match: str) -> float | None:
        """The sum of ``name``'s samples whose labels include ``match``; None when no target has it."""
        series = self.samples.get(name)
        if series is None:
            return None
        return sum(v for labels, v in series.items() if _matches(labels, match))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for labels, value in self.samples.get(name, {}).items():
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out


def _matches(labels: Labels, match: Mapping[str, str]) -> bool:
    have = dict(labels)
    return all(have.get(k) == v for k, v in match.items())


def parse(text: str, into: Samples) -> None:
    """Add the exposition's samples into ``into`` (summing series that several targets have)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series = into.setdefault(sample.name, {})
            key = tuple(sorted(sample.labels.items()))
            series[key] = series.get(key, 0.0) + sample.value


def rate(new: Snapshot, old: Snapshot, name: str, **match: str) -> float | None:
    """Per second between the snapshots; None without two snapshots or across a counter reset."""
    if new.at_s - old.at_s <= 0:
        return None
    a, b = old.total(name, **match), new.total(name, **match)
    if b is None:
        return None
    delta = b - (a or 0.0)
    return delta / (new.at_s - old.at_s) if delta >= 0 else None


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """``histogram_quantile`` over cumulative ``(le, count)`` pairs: linear within the bucket, the last
    finite bound past it; None without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 1.0)
        lower_bound, lower_count = bound, count
    return lower_bound


def histogram_quantile(
    new: Snapshot, old: Snapshot | None, q: float, name: str, label: str, value: str
) -> float | None:
    """Quantile ``q`` of histogram ``name``'s series whose ``label`` is ``value`` (every target's summed),
    over the window since ``old`` (all time without it, or across a counter reset)."""

    def buckets(snap: Snapshot | None) -> dict[float, float]:
        out: dict[float, float] = {}
        if snap is None:
            return out
        for labels, count in snap.samples.get(f"{name}_bucket", {}).items():
            d = dict(labels)
            if d.get(label) == value and "le" in d:
                le = float(d["le"])
                out[le] = out.get(le, 0.0) + count
        return out

    now, before = buckets(new), buckets(old)
    deltas = [(le, n - before.get(le, 0.0)) for le, n in now.items()]
    if any(d < 0 for _, d in deltas):  # a counter reset: the newest alone
        deltas = list(now.items())
    return quantile(q, deltas)


def latency_quantile(new: Snapshot, old: Snapshot | None, q: float, route: str = SERVE_ROUTE) -> float | None:
    """Seconds: quantile ``q`` of the route's latency over the window (all time with one snapshot)."""
    return histogram_quantile(new, old, q, "adserver_http_request_duration_seconds", "route", route)


def feedback_stage_quantiles(new: Snapshot, old: Snapshot | None, q: float) -> dict[str, float]:
    """Milliseconds: quantile ``q`` of each feedback stage's batch times over the window (``gate_ms``,
    ``debit_ms``, ``publish_ms``), from ``adserver_feedback_stage_seconds``: linear within a bucket, whose
    bounds are 5, 10, 25, 50, 100 ms... (a tail to read as "which stage", not to the millisecond)."""
    out: dict[str, float] = {}
    for stage in FEEDBACK_STAGES:
        seconds = histogram_quantile(new, old, q, "adserver_feedback_stage_seconds", "stage", stage)
        if seconds is not None:
            out[f"{stage}_ms"] = round(seconds * 1000, 2)
    return out


def read_once(url: str, timeout_s: float = 10.0) -> Snapshot:
    """One blocking scrape of ``url`` (a command's summary, a bench); raises ``httpx.HTTPError``."""
    response = httpx.get(url, timeout=timeout_s)
    response.raise_for_status()
    samples: Samples = {}
    parse(response.text, samples)
    return Snapshot(time.monotonic(), samples, (Target(url, True, None),))


def feedback_stages(new: Snapshot, old: Snapshot | None = None) -> dict[str, float]:
    """Mean milliseconds per feedback batch in each stage (``gate_ms``, ``debit_ms``, ``publish_ms``:
    ``adserver_feedback_stage_seconds``) and ``requests_per_batch``, over the batches since ``old`` (since
    the ad servers started without it, or when a counter went back: one restarted); empty without a
    batch meanwhile, or from servers without these metrics."""
    names = ("adserver_feedback_stage_seconds_sum", "adserver_feedback_stage_seconds_count")
    sums, counts = (new.by_label(name, "stage") for name in names)
    sums0, counts0 = (old.by_label(name, "stage") for name in names) if old is not None else ({}, {})
    sizes = ("adserver_feedback_batch_requests_sum", "adserver_feedback_batch_requests_count")
    size_sum, batches = ((new.total(name) or 0.0) for name in sizes)
    size_sum0, batches0 = ((old.total(name) or 0.0) for name in sizes) if old is not None else (0.0, 0.0)
    if batches < batches0 or any(n < counts0.get(stage, 0.0) for stage, n in counts.items()):
        sums0, counts0, size_sum0, batches0 = {}, {}, 0.0, 0.0
    out: dict[str, float] = {}
    for stage, n in counts.items():
        d = n - counts0.get(stage, 0.0)
        if d > 0:
            out[f"{stage}_ms"] = round((sums.get(stage, 0.0) - sums0.get(stage, 0.0)) / d * 1000, 3)
    if out and batches > batches0:
        out["requests_per_batch"] = round((size_sum - size_sum0) / (batches - batches0), 1)
    return out


def format_feedback_stages(stages: Mapping[str, float], tails: Mapping[str, float] | None = None) -> str:
    """One line: where a feedback batch's time went, on average, and (given ``tails``, the stages' p99 by
    ``feedback_stage_quantiles``) where its tail went."""
    gate, debit, publish = (stages.get(f"{stage}_ms", math.nan) for stage in FEEDBACK_STAGES)
    line = (
        f"per batch of {stages.get('requests_per_batch', math.nan):g} requests (means): gate {gate:.2f} ms, "
        f"debit {debit:.2f} ms, publish {publish:.2f} ms"
    )
    if tails:
        gate, debit, publish = (tails.get(f"{stage}_ms", math.nan) for stage in FEEDBACK_STAGES)
        line += f"; p99 gate {gate:.1f} ms, debit {debit:.1f} ms, publish {publish:.1f} ms"
    return line


class Scraper:
    """Scrapes ``urls`` on demand (shared between concurrent callers) and keeps recent snapshots."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        self._lock = asyncio.Lock()
        self._snapshots: deque[Snapshot] = deque()

    async def latest(self, urls: tuple[str, ...]) -> tuple[Snapshot, Snapshot | None]:
        """The newest snapshot (scraped now unless one is fresh) and the one to take rates against."""
        async with self._lock:
            now = time.monotonic()
            if not self._snapshots or now - self._snapshots[-1].at_s >= MIN_INTERVAL_S:
                samples: Samples = {}
                targets: list[Target] = []
                # Fetched concurrently, parsed one after another into one dict.
                texts = await asyncio.gather(*(self._fetch(url) for url in urls))
                for url, text in zip(urls, texts, strict=True):
                    if isinstance(text, Target):
                        targets.append(text)
                        continue
                    try:
                        parse(text, samples)
                        targets.append(Target(url, True, None))
                    except ValueError as exc:
                        targets.append(Target(url, False, f"unparsable: {exc}"[:120]))
                self._snapshots.append(Snapshot(time.monotonic(), samples, tuple(targets)))
                while self._snapshots[0].at_s < self._snapshots[-1].at_s - KEEP_S:
                    self._snapshots.popleft()
            newest = self._snapshots[-1]
            older = [s for s in self._snapshots if s.at_s >= newest.at_s - WINDOW_S and s is not newest]
            return newest, (older[0] if older else None)

    async def _fetch(self, url: str) -> str | Target:
        try:
            response = await self._client.get(url, timeout=TIMEOUT_S)
        except httpx.HTTPError as exc:
            return Target(url, False, type(exc).__name__)
        if response.status_code != 200:
            return Target(url, False, f"HTTP {response.status_code}")
        return response.text
