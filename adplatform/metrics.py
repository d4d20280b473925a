"""Prometheus metrics of the platform's single-process services (manager, served-writer, ledger, pacer,
reconciler, archive, ``adplatform run``); the ad server's workers have their own (``adserver.http.metrics``).

Metrics live in prometheus_client's default registry, defined here once so that the names are in one place
(``tests/deploy`` checks the dashboard against them). Each service starts the HTTP endpoint in its startup
(``serve_metrics``, never at import) on its port from ``Config.metrics_ports``. Consumer lag is refreshed
in the background (``lag_tracking``): end offset − the consumer's position, per assigned partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge, disable_created_metrics, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from adplatform.config import Config

logger = logging.getLogger(__name__)

#: How often consumer lag is refreshed, seconds.
LAG_INTERVAL_S: Final = 5.0

CONSUMER_LAG = Gauge(
    "adplatform_consumer_lag_records",
    "Records in the topic after the consumer's position (end offset - position), per assigned partition",
    ["group", "topic", "partition"],
)
MANAGER_INSTRUCTIONS = Counter(
    "manager_instructions_total",
    "Campaign instructions handled by the Ad Manager, by outcome: accepted, dead_lettered",
    ["outcome"],
)
LEDGER_CHARGES = Counter("ledger_charges_booked_total", "Charged feedback events booked in PostgreSQL")
LEDGER_UNDECODABLE = Counter("ledger_undecodable_total", "ad-feedback records skipped as undecodable")
SERVED_WRITER_ROWS = Counter("served_writer_rows_total", "Served ads inserted into online_ads.served_ads")
SERVED_WRITER_SKIPPED = Counter(
    "served_writer_skipped_total", "served-ads lines (or empty records) skipped as undecodable"
)
PACER_SLOTS = Counter(
    "pacer_slot_actions_total",
    "Slots the pacer saw, by action: paced (it held the slot's lease) or skipped (another pacer did)",
    ["action"],
)
PACER_CAMPAIGNS = Counter("pacer_campaigns_paced_total", "Campaigns rolled into a new slot")
PACER_BLOCKED = Gauge("pacer_blocked_campaigns", "Campaigns left blocked by the last slot this pacer paced")
RECONCILE_DRIFT = Gauge(
    "reconciler_drift_micros",
    "Sum over campaigns of |Redis spend - (PostgreSQL spend + unbooked events)| at the last round, micros",
)
RECONCILE_DIFFERING = Gauge(
    "reconciler_campaigns_differing", "Campaigns whose spend differed at the last round"
)
RECONCILE_REPAIRS = Counter("reconciler_repairs_total", "Campaigns whose Redis spend was repaired")
RECONCILE_ROUNDS = Counter("reconciler_rounds_total", "Reconcile rounds completed")
ARCHIVE_LAG = Gauge(
    "archive_commit_lag_records",
    "ad-feedback records after the archive's last committed micro-batch (end offset - committed offset)",
    ["topic", "partition"],
)
ARCHIVE_COMMITTED_BATCHES = Gauge("archive_committed_batch", "Id of the archive's last committed micro-batch")


def serve_metrics(config: Config, service: str) -> int | None:
    """Start ``/metrics`` for ``service`` on its configured port (a daemon thread); returns the port, or
    None when the port is 0 or taken (logged: a second instance on one host still runs, unscraped)."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated; *_created series are noise
    port = config.metrics_ports.get(service, 0)
    if port == 0:
        return None
    try:
        start_http_server(port, addr=config.metrics_host)
    except OSError as exc:
        logger.warning("metrics of %s not served: port %d: %s", service, port, exc)
        return None
    logger.info("metrics of %s on :%d/metrics", service, port)
    return port


async def refresh_lag(consumer: AIOKafkaConsumer, group: str, shown: set[TopicPartition]) -> None:
    """Set the lag gauge of every partition assigned to ``consumer``; drop the partitions it lost."""
    assigned = set(consumer.assignment())
    ends: Mapping[TopicPartition, int] = await consumer.end_offsets(list(assigned)) if assigned else {}
    for tp in assigned:
        try:
            # Known at once after the first fetch; before it, aiokafka looks the offset up (bounded here).
            position = await asyncio.wait_for(consumer.position(tp), timeout=2.0)
        except (TimeoutError, KafkaError, AssertionError):  # AssertionError: revoked meanwhile
            continue
        CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(max(ends.get(tp, position) - position, 0))
    for tp in shown - assigned:
        with contextlib.suppress(KeyError):
            CONSUMER_LAG.remove(group, tp.topic, str(tp.partition))
    shown.clear()
    shown.update(assigned)


@contextlib.asynccontextmanager
async def lag_tracking(
    consumer: AIOKafkaConsumer, group: str, *, interval_s: float = LAG_INTERVAL_S
) -> AsyncIterator[None]:
    """Refresh ``group``'s lag gauges every ``interval_s`` while the block runs; a refresh that fails
    (Kafka unreachable) is logged and retried at the next interval, the gauges keep their last value."""
    shown: set[TopicPartition] = set()

    async def loop() -> None:
        while True:
            try:
                await refresh_lag(consumer, group, shown)
            except (KafkaError, OSError) as exc:
                logger.debug("consumer lag of %s not refreshed: %s", group, exc)
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(loop(), name=f"lag-{group}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for tp in shown:
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(group, tp.topic, str(tp.partition))


class RestartCollector(Collector):
    """``adplatform_run_restarts_total{service}``, read from the supervisor at each scrape."""

    def __init__(self, restarts: Callable[[], Mapping[str, int]]) -> None:
        self._restarts = restarts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "adplatform_run_restarts", "Restarts of each service by adplatform run", labels=["service"]
        )
        for service, count in sorted(self._restarts().items()):
            family.add_metric([service], count)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield from self.collect()


def register_restarts(restarts: Callable[[], Mapping[str, int]]) -> RestartCollector:
    """Expose ``restarts()`` (e.g. ``Supervisor.restarts``) in the default registry."""
    collector = RestartCollector(restarts)
    REGISTRY.register(collector)
    return collector
