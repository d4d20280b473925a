"""The ad server's metrics: plain per-worker counters on the hot path, exported through prometheus_client.

A request costs a dict increment and a bucket scan (``RequestMetrics.observe``, compiled with the serving hot
path, ``adplatform.native``): prometheus_client's multiprocess values cost a lock and an mmap write per
increment, several per request. Each worker instead *flushes* its in-memory counts into prometheus_client's
metrics (``WorkerExporter``) once a second (``FLUSH_INTERVAL_S``), at each ``/metrics`` it answers, and when
it stops. Under ``adplatform serve`` (``adserver.http.server``) ``PROMETHEUS_MULTIPROC_DIR`` names a
per-server directory, so those metrics live in per-process files and any worker's ``/metrics`` answers the
sum over every worker (the ones that exited included, for counters): ``rate()`` no longer jumps between
workers. What a scrape shows is each worker's count as of its last flush, at most ``FLUSH_INTERVAL_S`` old.
Without the variable (tests, an embedded app) a worker exports its own counts from its own registry.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest
from prometheus_client import Histogram as PromHistogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

logger = logging.getLogger(__name__)

#: Bucket bounds. Typed ``tuple[float, ...]``: mypyc (this module is compiled, ``adplatform.native``) keeps a
#: fixed-length tuple of floats unboxed, and then misreads a set value as not set.
Bounds = tuple[float, ...]
#: Latency bucket bounds, seconds: fine below 5 ms, where the serve route's target lies.
LATENCY_BUCKETS_S: Final[Bounds] = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: Change propagation (ad-changes record created → applied to the index), seconds.
PROPAGATION_BUCKETS_S: Final[Bounds] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
#: Bidders taking part in a won auction's pricing (the winner's tie group and the runner-up).
BIDDER_BUCKETS: Final[Bounds] = (1.0, 2.0, 3.0, 5.0, 10.0)
#: Requests in a feedback batch (one debit script call, one publish); a worker takes at most 256.
BATCH_BUCKETS: Final[Bounds] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
#: How often each worker copies its counts into the exported metrics.
FLUSH_INTERVAL_S: Final = 1.0
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

#: How the workers' values of a gauge combine in the multiprocess exposition. Workers hold the same index
#: and profiles once caught up, so summing would count them once per worker: "is every worker there"
#: gauges take the worst worker (``livemin``), "how far behind" gauges the worst worker too (``livemax``),
#: queues add up (``livesum``). ``live*``: a worker that exited stops counting.
GAUGE_MODES: Final[Mapping[str, str]] = {
    "adserver_worker_info": "liveall",  # one series per live worker, labelled pid
    "adserver_index_ready": "livemin",
    "adserver_blocked_listener_connected": "livemin",
    "adserver_profiles": "livemin",
    "adserver_index_size": "livemax",
    "adserver_index_lag_records": "livemax",
    "adserver_index_last_applied_age_seconds": "livemax",
    "adserver_index_bootstrap_seconds": "livemax",
    "adserver_blocked_campaigns": "livemax",
    "adserver_served_ads_queued": "livesum",
    "adserver_request_counts_pending": "livesum",
}
#: A gauge not listed above: the worst worker, never more than one worker's own value.
DEFAULT_GAUGE_MODE: Final = "livemax"

Labels = Sequence[tuple[str, str]]


class Histogram:
    """Cumulative-on-render histogram: ``observe`` finds the bucket and makes three increments."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # ``bisect_left`` as a scan from the low end, compiled (adplatform.native): most values fall in the
        # first buckets, and a dozen float compares cost less than a call into ``bisect``.
        i = 0
        for bound in self.bounds:
            if value <= bound:
                break
            i += 1
        self.counts[i] += 1
        self.sum += value
        self.count += 1

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (``inf`` past the last bound, NaN if empty)."""
        if self.count == 0:
            return math.nan
        rank = q * self.count
        seen = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            seen += n
            if seen >= rank:
                return bound
        return math.inf


class RequestMetrics:
    """Counts per (route, status) and a latency histogram per route, fed by the timing middleware; and
    the exporter that publishes them."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.exporter = WorkerExporter()

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(route)
        if hist is None:
            hist = self.latency[route] = Histogram(LATENCY_BUCKETS_S)
        hist.observe(seconds)


def multiprocess_dir() -> str | None:
    """The directory of the per-process metric files, when the server runner set one."""
    return os.environ.get(MULTIPROC_ENV) or None


_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def mark_dead_workers(path: str) -> list[int]:
    """``mark_process_dead`` for every worker whose live-gauge file outlived its process (a crash skips the
    worker's own shutdown); counters of dead workers stay, so sums never go down."""
    dead: list[int] = []
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _LIVE_FILE.search(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if not os.path.exists(f"/proc/{pid}") and pid not in dead:
            mark_process_dead(pid, path)  # type: ignore[no-untyped-call]  # prometheus_client's multiprocess helpers are unannotated
            dead.append(pid)
    return dead


class WorkerExporter:
    """This worker's values as prometheus_client metrics, created on first use by name.

    ``counter`` and ``histogram`` take the worker's running totals and add what grew since the last flush;
    ``gauge`` sets. ``render`` answers ``/metrics``: the sum over every worker's files in multiprocess mode,
    this registry otherwise.
    """

    def __init__(self) -> None:
        # ``*_created`` series: noise here, and absent in multiprocess mode.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._histograms: dict[str, PromHistogram] = {}
        self._flushed: dict[tuple[str, tuple[str, ...]], float] = {}
        self._flushed_buckets: dict[tuple[str, tuple[str, ...]], tuple[list[int], float]] = {}

    def counter(self, name: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        for labels, total in samples:
            metric = self._counters.get(name)
            if metric is None:
                metric = self._counters[name] = Counter(
                    name, help_text, [k for k, _ in labels], registry=self.registry
                )
            values = tuple(v for _, v in labels)
            key = (name, values)
            child = metric.labels(*values) if values else metric  # the series exists from 0 on
            delta = total - self._flushed.get(key, 0)
            if delta > 0:  # a source that restarted from 0 (re-created) adds from its new total on
                child.inc(delta)
            if delta != 0:
                self._flushed[key] = total

    def gauge(self, name: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        for labels, value in samples:
            metric = self._gauges.get(name)
            if metric is None:
                metric = self._gauges[name] = Gauge(
                    name,
                    help_text,
                    [k for k, _ in labels],
                    registry=self.registry,
                    multiprocess_mode=GAUGE_MODES.get(name, DEFAULT_GAUGE_MODE),  # type: ignore[arg-type]  # a str of the table
                )
            values = tuple(v for _, v in labels)
            (metric.labels(*values) if values else metric).set(value)

    def histogram(self, name: str, help_text: str, series: Iterable[tuple[Labels, Histogram]]) -> None:
        for labels, hist in series:
            metric = self._histograms.get(name)
            if metric is None:
                metric = self._histograms[name] = PromHistogram(
                    name, help_text, [k for k, _ in labels], registry=self.registry, buckets=hist.bounds
                )
            values = tuple(v for _, v in labels)
            child = metric.labels(*values) if values else metric
            key = (name, values)
            counts, total = self._flushed_buckets.get(key, ([0] * len(hist.counts), 0.0))
            if hist.count == sum(counts):
                continue
            # prometheus_client has no public "add n to bucket i": its Histogram keeps one value per bucket
            # (``_buckets``, +Inf last, the order of our counts) and ``_sum``; observe() would cost a call
            # per request again.
            for i, (now, before) in enumerate(zip(hist.counts, counts, strict=True)):
                if now > before:
                    child._buckets[i].inc(now - before)
            child._sum.inc(hist.sum - total)
            self._flushed_buckets[key] = (list(hist.counts), hist.sum)

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        """``counter`` or ``gauge`` by ``kind`` (the shape of the exposition builder this replaced)."""
        if kind == "counter":
            self.counter(name, help_text, samples)
        else:
            self.gauge(name, help_text, samples)

    def histograms(self, name: str, help_text: str, series: Iterable[tuple[Labels, Histogram]]) -> None:
        self.histogram(name, help_text, series)

    def render(self) -> bytes:
        """The exposition in the Prometheus text format."""
        path = multiprocess_dir()
        if path is None:
            families = list(self.registry.collect())
        else:
            mark_dead_workers(path)
            collector = MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]  # prometheus_client's multiprocess helpers are unannotated
            families = list(collector.collect())  # type: ignore[no-untyped-call]  # same
        return generate_latest(_Families([*families, *_derived(families)]))


class _Families:
    """A collected snapshot, in the shape ``generate_latest`` takes."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _total(families: Iterable[Metric], name: str) -> float:
    return sum(s.value for f in families for s in f.samples if s.name == name)


def _derived(families: list[Metric]) -> Iterator[Metric]:
    """Ratios are computed from the summed counters, never averaged over workers."""
    served = _total(families, "adserver_ads_served_total")
    unfilled = _total(families, "adserver_ads_unfilled_total")
    auctions = served + unfilled
    yield GaugeMetricFamily(
        "adserver_fill_ratio",
        "Served ads / auctions run (200 and 404 answers), over every worker",
        value=served / auctions if auctions else 0.0,
    )


@contextlib.contextmanager
def worker_files_closed() -> Iterator[None]:
    """On exit: this worker's live gauges are dropped from the sums (``mark_process_dead``)."""
    try:
        yield
    finally:
        path = multiprocess_dir()
        if path is not None:
            mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]  # prometheus_client's multiprocess helpers are unannotated
