"""A tiny Prometheus registry: request counters and latency histograms per route, and a text builder.

Hand-rolled rather than prometheus-client because the hot path only needs a dict increment and a bisect,
and every series here is per worker process (each uvicorn worker answers ``/metrics`` for itself; the
``adserver_worker_info`` series names the process).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Final

#: Latency bucket bounds, seconds: fine below 5 ms, where the serve route's target lies.
LATENCY_BUCKETS_S: Final = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: Change propagation (ad-changes record created → applied to the index), seconds.
PROPAGATION_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

Labels = Sequence[tuple[str, str]]


class Histogram:
    """Cumulative-on-render histogram: ``observe`` is a bisect and three increments."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
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
    """Counts per (route, status) and a latency histogram per route, fed by the timing middleware."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(route)
        if hist is None:
            hist = self.latency[route] = Histogram(LATENCY_BUCKETS_S)
        hist.observe(seconds)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class Exposition:
    """Builds the Prometheus text format (version 0.0.4), one metric family at a time."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        self._lines.extend(f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples)

    def histograms(self, name: str, help_text: str, series: Iterable[tuple[Labels, Histogram]]) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} histogram")
        for labels, hist in series:
            cumulative = 0
            for bound, n in zip((*hist.bounds, math.inf), hist.counts, strict=True):
                cumulative += n
                le = (*labels, ("le", _number(float(bound))))
                self._lines.append(f"{name}_bucket{_labels(le)} {cumulative}")
            self._lines.append(f"{name}_sum{_labels(labels)} {_number(hist.sum)}")
            self._lines.append(f"{name}_count{_labels(labels)} {hist.count}")

    def render(self) -> bytes:
        return ("\n".join(self._lines) + "\n").encode()
