"""``/healthz``, ``/readyz`` and ``/metrics``: liveness, readiness, and the Prometheus exposition."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adserver.feedback import FeedbackCounters
from adserver.http.metrics import Exposition
from adserver.state import ServerState, StateRef

Endpoint = Callable[[Request], Awaitable[Response]]
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def healthz(request: Request) -> Response:
    """200 while the process answers at all."""
    return JSONResponse({"status": "ok"})


def readyz(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        state = ref.state
        if state is None:
            return JSONResponse({"status": "starting", "worker": os.getpid()}, status_code=503)
        body = {
            "status": "ready" if state.ready else "bootstrapping",
            "worker": os.getpid(),  # several workers share one port: says which one answered
            "index_ready": state.refresher.ready.is_set(),
            "index_size": len(state.index),
            "profiles": len(state.profiles),
            "profiles_loaded": state.profiles.loaded_at_s is not None,
        }
        return JSONResponse(body, status_code=200 if state.ready else 503)

    return endpoint


def _state_families(out: Exposition, state: ServerState) -> None:
    refresher, publisher, stats = state.refresher, state.publisher, state.stats
    lag = refresher.lag()
    last = refresher.last_applied_s
    gauges = (
        (
            "adserver_index_ready",
            "1 once the index is bootstrapped from ad-changes",
            refresher.ready.is_set(),
        ),
        ("adserver_index_size", "Campaigns in the index (Active, flight not ended)", len(state.index)),
        (
            "adserver_index_lag_records",
            "ad-changes records not applied yet",
            math.nan if lag is None else lag,
        ),
        (
            "adserver_index_last_applied_age_seconds",
            "Seconds since the last change was applied",
            math.nan if last is None else max(time.time() - last, 0.0),
        ),
        (
            "adserver_index_bootstrap_seconds",
            "Duration of the bootstrap",
            math.nan if refresher.bootstrap_s is None else refresher.bootstrap_s,
        ),
        ("adserver_blocked_campaigns", "Campaigns skipped for spent budgets", len(state.index.blocked)),
        (
            "adserver_blocked_listener_connected",
            "1 while subscribed to budget events",
            state.blocked.connected,
        ),
        ("adserver_profiles", "User profiles in memory", len(state.profiles)),
        ("adserver_fill_ratio", "Served ads / auctions run (200 and 404 answers)", stats.fill_ratio),
        ("adserver_served_ads_queued", "Served ads waiting to be published", len(publisher)),
    )
    for name, help_text, value in gauges:
        out.family(name, "gauge", help_text, [((), float(value))])
    counters = (
        ("adserver_ads_served_total", "Auctions won (200)", stats.served),
        ("adserver_ads_unfilled_total", "Auctions without an eligible ad (404)", stats.unfilled),
        ("adserver_index_changes_applied_total", "Campaign states applied to the index", refresher.applied),
        (
            "adserver_index_decode_errors_total",
            "ad-changes records skipped as undecodable",
            refresher.decode_errors,
        ),
        ("adserver_index_reconnects_total", "ad-changes consumer re-creations", refresher.reconnects),
        ("adserver_profile_load_failures_total", "Failed profile reloads", state.profiles.failures),
        ("adserver_served_ads_sent_total", "Served ads acknowledged by Kafka", publisher.sent),
        ("adserver_served_ads_failed_total", "Served ads Kafka did not take", publisher.failed),
        ("adserver_served_ads_dropped_total", "Served ads dropped (queue full)", publisher.dropped),
        ("adserver_requests_sampled_total", "Serve requests sampled", state.sampler.sampled),
        ("adserver_request_samples_sent_total", "Request samples acknowledged by Kafka", state.sampler.sent),
        ("adserver_request_samples_failed_total", "Request samples Kafka did not take", state.sampler.failed),
        (
            "adserver_request_samples_dropped_total",
            "Request samples dropped (queue full)",
            state.sampler.dropped,
        ),
    )
    for name, help_text, count in counters:
        out.family(name, "counter", help_text, [((), count)])
    out.histograms(
        "adserver_change_propagation_seconds",
        "From an ad-changes record's creation to its application in this worker's index",
        [((), refresher.propagation)],
    )


def feedback_families(out: Exposition, counters: FeedbackCounters) -> None:
    """This worker's feedback outcomes, per worker like every other counter here."""
    for name, help_text, count in (
        (
            "adserver_feedback_accepted_total",
            "Feedback events charged and acknowledged by Kafka",
            counters.accepted,
        ),
        (
            "adserver_feedback_duplicates_total",
            "Feedback for an already charged request_id (answered, charged nothing)",
            counters.duplicates,
        ),
        (
            "adserver_feedback_rejected_tokens_total",
            "Feedback with a forged, malformed or expired request_id (404)",
            counters.rejected_tokens,
        ),
        (
            "adserver_feedback_unavailable_total",
            "Feedback refused with 503 (budget store or event log unavailable; nothing charged)",
            counters.unavailable,
        ),
        (
            "adserver_feedback_charged_micros_total",
            "Micro-units charged by acknowledged feedback events",
            counters.charged_micros,
        ),
        (
            "adserver_feedback_batches_total",
            "Debit script calls to Redis (one per batch of feedback)",
            counters.batches,
        ),
    ):
        out.family(name, "counter", help_text, [((), count)])


def metrics(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        out = Exposition()
        out.family(
            "adserver_worker_info", "gauge", "This worker process", [((("pid", str(os.getpid())),), 1)]
        )
        requests = ref.metrics.requests
        out.family(
            "adserver_http_requests_total",
            "counter",
            "HTTP requests by route template and status",
            [
                ((("route", route), ("status", str(status))), n)
                for (route, status), n in sorted(requests.items())
            ],
        )
        out.histograms(
            "adserver_http_request_duration_seconds",
            "HTTP request latency by route template",
            [((("route", route),), hist) for route, hist in sorted(ref.metrics.latency.items())],
        )
        if ref.state is not None:
            _state_families(out, ref.state)
            if ref.state.feedback is not None:
                feedback_families(out, ref.state.feedback.counters)
        return Response(out.render(), media_type=PROMETHEUS_TYPE)

    return endpoint
