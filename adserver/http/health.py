"""``/healthz``, ``/readyz`` and ``/metrics``: liveness, readiness, and the Prometheus exposition.

``flush`` copies this worker's counts into its exporter (``adserver.http.metrics``): each second from the
``flushing`` task, and before answering ``/metrics``, which shows the sum over every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adserver.fcap import CapStats
from adserver.feedback import FeedbackCounters
from adserver.http.fastpath import SERVE_ROUTE
from adserver.http.metrics import FLUSH_INTERVAL_S, RequestMetrics, WorkerExporter, worker_files_closed
from adserver.state import NO_ELIGIBLE_AD, ServerState, StateRef

logger = logging.getLogger(__name__)

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


def _state_families(out: WorkerExporter, state: ServerState) -> None:
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
        ("adserver_served_ads_queued", "Served ads waiting to be published", len(publisher)),
    )
    for name, help_text, value in gauges:
        out.family(name, "gauge", help_text, [((), float(value))])
    counters: list[tuple[str, str, int]] = [
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
        (
            "adserver_profile_reloads_total",
            "Profile tables read whole (the table changed, or the 10-minute reload)",
            state.profiles.reloads,
        ),
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
    ]
    if state.counts is not None:
        counters += (
            (
                "adserver_request_counts_sent_total",
                "Request-count windows acknowledged by Kafka",
                state.counts.sent,
            ),
            (
                "adserver_request_counts_dropped_total",
                "Request-count windows dropped after waiting too long for Kafka",
                state.counts.dropped,
            ),
        )
        out.family(
            "adserver_request_counts_pending",
            "gauge",
            "Request-count windows waiting for Kafka's acknowledgement",
            [((), float(len(state.counts.pending)))],
        )
    for name, help_text, count in counters:
        out.family(name, "counter", help_text, [((), count)])
    cap_families(out, state.caps.stats)
    out.histograms(
        "adserver_change_propagation_seconds",
        "From an ad-changes record's creation to its application in this worker's index",
        [((), refresher.propagation)],
    )


def cap_families(out: WorkerExporter, stats: CapStats) -> None:
    """What this worker's frequency-cap gate did (``adserver.fcap``)."""
    for name, help_text, count in (
        ("adserver_fcap_checked_total", "Auctions that checked frequency caps in Redis", stats.checked),
        (
            "adserver_fcap_moved_on_total",
            "Auctions that passed over a capped campaign at its cap for the user",
            stats.moved_on,
        ),
        (
            "adserver_fcap_skipped_unavailable_total",
            "Auctions that skipped capped campaigns: Redis failed, missed the deadline or was paused",
            stats.skipped_unavailable,
        ),
        (
            "adserver_fcap_skipped_anonymous_total",
            "Auctions of the anonymous user that skipped capped campaigns",
            stats.skipped_anonymous,
        ),
    ):
        out.family(name, "counter", help_text, [((), count)])


def feedback_families(out: WorkerExporter, counters: FeedbackCounters) -> None:
    """This worker's feedback outcomes."""
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
        (
            "adserver_feedback_republished_total",
            "Duplicates whose first charge had outlived its publish window, published again (same event_id)",
            counters.republished,
        ),
    ):
        out.family(name, "counter", help_text, [((), count)])
    out.histogram(
        "adserver_feedback_stage_seconds",
        "Seconds a feedback batch spent in each stage: gate (waiting for the worker's previous debit call), "
        "debit (the Redis script call, AOF fsync included), publish (events handed to Kafka until "
        "acknowledged, acks=all)",
        [((("stage", stage),), hist) for stage, hist in counters.stages.items()],
    )
    out.histogram(
        "adserver_feedback_batch_requests",
        "Feedback requests per batch (one debit script call and one publish each)",
        [((), counters.batch_requests)],
    )


#: Outcome of a serve request by its status: 404 is the no-fill answer.
_SERVE_OUTCOMES = {200: "served", 404: "no_fill"}


def serve_outcomes(metrics: RequestMetrics) -> dict[str, int]:
    """Serve requests by outcome: served, no_fill, client_error (other 4xx), server_error (5xx, 503 while
    the index loads included)."""
    out = {"served": 0, "no_fill": 0, "client_error": 0, "server_error": 0}
    for (route, status), n in metrics.requests.items():
        if route == SERVE_ROUTE:
            outcome = _SERVE_OUTCOMES.get(status) or ("client_error" if status < 500 else "server_error")
            out[outcome] += n
    return out


def flush(ref: StateRef) -> None:
    """Copy this worker's counts and state into its exporter."""
    out = ref.metrics.exporter
    out.gauge("adserver_worker_info", "One series per live worker process (label pid)", [((), 1.0)])
    out.counter(
        "adserver_http_requests_total",
        "HTTP requests by route template and status",
        [
            ((("route", route), ("status", str(status))), n)
            for (route, status), n in ref.metrics.requests.items()
        ],
    )
    out.histogram(
        "adserver_http_request_duration_seconds",
        "HTTP request latency by route template",
        [((("route", route),), hist) for route, hist in ref.metrics.latency.items()],
    )
    out.counter(
        "adserver_serve_requests_total",
        "Serve requests by outcome: served, no_fill, client_error (4xx), server_error (5xx)",
        [((("outcome", outcome),), n) for outcome, n in serve_outcomes(ref.metrics).items()],
    )
    state = ref.state
    if state is None:
        return
    out.counter(
        "adserver_no_fill_total",
        "Serve requests answered without an ad (404), by reason: no_eligible_ad (no campaign matched, "
        "eligible and above the reserve, or every one was capped for the user)",
        [((("reason", NO_ELIGIBLE_AD),), state.stats.unfilled)],
    )
    out.histogram(
        "adserver_auction_bidders",
        "Bidders in a won auction's pricing: the winner's tie group and the runner-up",
        [((), state.stats.bidders)],
    )
    _state_families(out, state)
    if state.feedback is not None:
        feedback_families(out, state.feedback.counters)


def metrics(ref: StateRef) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        flush(ref)
        return Response(ref.metrics.exporter.render(), media_type=PROMETHEUS_TYPE)

    return endpoint


def _flush_guarded(ref: StateRef) -> None:
    try:
        flush(ref)
    except Exception:  # top-level guard of a background task: a failed flush must not stop the next ones
        logger.exception("metrics flush failed")


@contextlib.asynccontextmanager
async def flushing(ref: StateRef, interval_s: float = FLUSH_INTERVAL_S) -> AsyncIterator[None]:
    """Flush every ``interval_s`` while the worker runs; on exit a last flush (what this worker counted
    stays in the sums), then its live gauges leave them."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval_s)
            _flush_guarded(ref)

    with worker_files_closed():
        task = asyncio.create_task(loop(), name="metrics-flush")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            _flush_guarded(ref)
